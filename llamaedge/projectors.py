"""Which vision projector (mmproj) goes with a model file that the catalog does not know, by
the models folder's layout, after llama-server's router (`--models-dir`, llama.cpp
common/preset.cpp `load_from_models_dir`): a GGUF whose name contains `mmproj` is a projector,
never a model of its own; a model in a folder of its own under the models folder is paired
with the projector in that same folder; a model directly in the models folder has none.

Two differences from the router, both because this library lists every GGUF of a subfolder
as a model where the router takes a subfolder for one model: every model of such a folder
(the quantizations of one repository, as `hf:` downloads lay them out) gets the folder's
projector; and with several projectors in one folder the first by name is taken (the router
takes whichever its directory listing gives last). A catalog entry's projector is the one the
entry names (catalog.projector_for), whatever else lies in its folder.
"""

from __future__ import annotations

from pathlib import Path

GGUF_SUFFIX = ".gguf"
# llama.cpp's `is_mmproj_file`: the name contains it (matched here without regard to case).
PROJECTOR_MARK = "mmproj"


def is_projector_file(name: str) -> bool:
    """Whether a file name is a projector's, not a model's."""
    return PROJECTOR_MARK in name.lower()


def projector_in_folder(model: Path, models_dir: Path) -> Path | None:
    """The projector beside `model` when `model` lies in a subfolder of `models_dir`, or None
    (directly in the models folder, outside it, or no projector there)."""
    folder = model.parent.resolve()
    root = models_dir.resolve()
    if folder == root or not folder.is_relative_to(root):
        return None
    try:
        found = sorted(p for p in folder.iterdir()
                       if p.name.endswith(GGUF_SUFFIX) and is_projector_file(p.name) and p.is_file())
    except OSError:  # the folder went away, or cannot be listed: no projector to pair
        return None
    return found[0] if found else None


def projector_bytes(path: Path | None) -> int:
    """The projector file's size (what its weights take loaded), 0 without one or when it
    cannot be read (the load will say why)."""
    if path is None:
        return 0
    try:
        return path.stat().st_size
    except OSError:
        return 0
