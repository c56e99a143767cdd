"""What this llama.cpp build can run on: GPU offload, the devices and their memory, build
information."""

from __future__ import annotations

import ctypes

import llama_cpp as lc

from llamaedge.engine.backend import init_backend
from llamaedge.types import Device

LLAMA_CPP_PYTHON_VERSION: str = lc.__version__
_DEVICE_KINDS = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel"}


def supports_gpu_offload() -> bool:
    init_backend()
    return bool(lc.llama_supports_gpu_offload())


def _ggml() -> ctypes.CDLL:
    from llama_cpp._ggml import libggml  # the ggml library llama-cpp-python loaded

    lib = libggml
    lib.ggml_backend_dev_count.restype = ctypes.c_size_t
    lib.ggml_backend_dev_get.restype = ctypes.c_void_p
    lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    for name in ("ggml_backend_dev_name", "ggml_backend_dev_description"):
        getattr(lib, name).restype = ctypes.c_char_p
        getattr(lib, name).argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_type.restype = ctypes.c_int
    lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_dev_memory.restype = None
    lib.ggml_backend_dev_memory.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_size_t),
        ctypes.POINTER(ctypes.c_size_t),
    ]
    return lib


def list_devices() -> list[Device]:
    """The devices in ggml's backend registry, with their free and total memory."""
    init_backend()
    lib = _ggml()
    devices = []
    for index in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(index)
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        devices.append(
            Device(
                name=(lib.ggml_backend_dev_name(dev) or b"").decode(),
                description=(lib.ggml_backend_dev_description(dev) or b"").decode(),
                kind=_DEVICE_KINDS.get(lib.ggml_backend_dev_type(dev), "unknown"),
                memory_free_bytes=free.value,
                memory_total_bytes=total.value,
            )
        )
    return devices


def build_info() -> dict[str, str]:
    """llama-cpp-python's version and llama.cpp's system info line (backends, CPU features)."""
    init_backend()
    return {
        "llama_cpp_python": LLAMA_CPP_PYTHON_VERSION,
        "system_info": lc.llama_print_system_info().decode(errors="replace").strip(),
        "gpu_offload": "yes" if lc.llama_supports_gpu_offload() else "no",
    }
