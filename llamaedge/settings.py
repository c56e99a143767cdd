"""Where llamaedge keeps its files. One environment variable, LLAMAEDGE_HOME, moves all of
them (tests point it at a temporary directory); otherwise platformdirs decides."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "llamaedge"


def home_dir() -> Path | None:
    home = os.environ.get("LLAMAEDGE_HOME")
    return Path(home).expanduser() if home else None


def data_dir() -> Path:
    home = home_dir()
    return home if home else Path(platformdirs.user_data_dir(APP_NAME))


def models_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Downloaded models: --models-dir, else LLAMAEDGE_MODELS_DIR, else <data dir>/models."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get("LLAMAEDGE_MODELS_DIR")
    return Path(env).expanduser() if env else data_dir() / "models"


def catalog_path() -> Path | None:
    """A catalog to use instead of the package's models.json: LLAMAEDGE_CATALOG."""
    env = os.environ.get("LLAMAEDGE_CATALOG")
    return Path(env).expanduser() if env else None


def cache_dir() -> Path:
    """Compiled wasm modules and other caches that can be deleted at any time."""
    home = home_dir()
    return home / "cache" if home else Path(platformdirs.user_cache_dir(APP_NAME))
