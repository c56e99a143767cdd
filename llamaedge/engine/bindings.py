"""llama-cpp-python's low-level bindings without the rest of its package.

`import llama_cpp` runs the package's __init__, which imports its high-level API too (numpy,
jinja2, the chat formats: most of a second at startup, on the critical path of a cold start).
The engine uses the low-level bindings (llama_cpp.llama_cpp) and a few submodules only, so
`install()` registers the package without running its __init__ and gives it the low-level
names, as the __init__'s `from .llama_cpp import *` would; the high-level names load on first
use. Installed by llamaedge.engine before any of its modules imports llama_cpp."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
from typing import Any


def install() -> None:
    if "llama_cpp" in sys.modules:  # already imported, whole or by us
        return
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.loader is None:
        raise ImportError("llama-cpp-python is not installed")
    package = importlib.util.module_from_spec(spec)
    sys.modules["llama_cpp"] = package
    try:
        low_level = importlib.import_module("llama_cpp.llama_cpp")
    except BaseException:
        del sys.modules["llama_cpp"]
        raise
    package.__dict__.update((k, v) for k, v in vars(low_level).items() if not k.startswith("_"))
    package.__dict__["__version__"] = importlib.metadata.version("llama_cpp_python")

    def high_level(name: str) -> Any:
        # The rest of what the package's __init__ would give: `from .llama import *`.
        value = getattr(importlib.import_module("llama_cpp.llama"), name, _MISSING)
        if value is _MISSING or name.startswith("_"):
            raise AttributeError(f"module 'llama_cpp' has no attribute {name!r}")
        return value

    package.__dict__["__getattr__"] = high_level


_MISSING = object()
