"""The engine's exceptions, all EngineError (a LlamaEdgeError; the whole tree is drawn in
llamaedge/errors.py): the caller maps each once (runtime/nn to error codes).

    EngineError
    ├── LoadError           a model file llama.cpp cannot read or load, or a context it cannot make
    ├── ModelClosed         the model is shutting down: it takes no more work
    ├── BadInput            a prompt, token id or sampling option the model cannot take
    ├── PromptTooLong       an input that does not fit its context
    ├── GrammarError        a grammar that does not parse, a JSON schema with no grammar
    ├── NoChatTemplate      the model has no chat template
    └── TemplateError       the chat template failed on the messages it was given
"""

from __future__ import annotations

from llamaedge.errors import LlamaEdgeError


class EngineError(LlamaEdgeError):
    pass


class LoadError(EngineError):
    pass


class ModelClosed(EngineError):
    pass


class BadInput(EngineError):
    pass


class PromptTooLong(EngineError):
    pass


class GrammarError(EngineError):
    pass


class NoChatTemplate(EngineError):
    pass


class TemplateError(EngineError):
    pass
