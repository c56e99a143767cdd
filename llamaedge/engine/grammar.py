"""Grammars: JSON schema to GBNF (optionally between a literal prefix and suffix), and the
patterns of lazy grammars' trigger words."""

from __future__ import annotations

import json

from llama_cpp.llama_grammar import SchemaConverter

from llamaedge.engine.errors import GrammarError

_REGEX_SPECIAL = set(".^$|()*+?[]{}\\")


def json_schema_grammar(schema: str, prefix: str = "", suffix: str = "") -> str:
    """A GBNF grammar that only admits `prefix` + JSON valid under `schema` (JSON text) +
    `suffix`, the JSON part built the way llama.cpp's server does. GrammarError when the
    schema cannot be converted."""
    try:
        converter = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
        resolved = converter.resolve_refs(json.loads(schema), "stdin")
        value = converter.visit(resolved, "json-value" if prefix or suffix else "")
        if prefix or suffix:
            parts = [converter._format_literal(prefix)] if prefix else []
            parts.append(value)
            if suffix:
                parts.append(converter._format_literal(suffix))
            converter._add_rule("root", " ".join(parts))
        return converter.format_grammar()
    except Exception as exc:  # the converter raises assorted errors on bad schemas
        raise GrammarError(f"json-schema cannot be turned into a grammar: {exc}") from exc


def trigger_pattern(text: str) -> bytes:
    """llama.cpp's lazy-grammar pattern for a trigger word (as its common library builds
    it): the text generated so far matches once it contains the word, and the grammar takes
    over from the word on."""
    escaped = "".join("\\" + ch if ch in _REGEX_SPECIAL else ch for ch in text)
    return f"[\\s\\S]*?({escaped})[\\s\\S]*".encode()
