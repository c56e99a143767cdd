"""GPU offload: how many layers to put on the GPU, decided from the devices llama.cpp reports.

`plan_offload` is pure (numbers and `Device` lists in, an `OffloadPlan` out) and table-tested.
`probe_devices` and `gpu_offload_supported` ask the engine (llama.cpp) and fall back to what
the operating system says about RAM when the engine cannot be loaded.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass

from llamaedge.types import Device

log = logging.getLogger(__name__)

# Kept free on each GPU for llama.cpp's compute buffers and the driver's own use.
GPU_RESERVE_BYTES = 512 * 1024 * 1024
GPU_KINDS = ("gpu", "igpu")
ALL_LAYERS = -1  # llama.cpp's n_gpu_layers for "every layer"


@dataclass(frozen=True)
class OffloadPlan:
    """`n_gpu_layers` for llama.cpp (-1 all, 0 none, else that many), the GPUs used, and why."""

    n_gpu_layers: int
    mode: str  # "full", "partial" or "cpu"
    reason: str
    devices: tuple[Device, ...] = ()


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB"


def plan_offload(
    model_bytes: int,
    n_layers: int,
    kv_bytes: int,
    devices: list[Device],
    supports_offload: bool,
    *,
    reserve_bytes: int = GPU_RESERVE_BYTES,
) -> OffloadPlan:
    """All layers on the GPU when weights plus KV cache fit in free GPU memory, as many layers
    as fit when they do not, none when there is no usable GPU."""
    if n_layers <= 0:
        raise ValueError("n_layers must be positive")
    if not supports_offload:
        return OffloadPlan(0, "cpu", "this llama.cpp build has no GPU backend: running on the CPU")
    gpus = tuple(d for d in devices if d.kind in GPU_KINDS)
    if not gpus:
        return OffloadPlan(0, "cpu", "no GPU found: running on the CPU")
    names = ", ".join(d.description or d.name for d in gpus)
    usable = sum(max(d.memory_free_bytes - reserve_bytes, 0) for d in gpus)
    need = model_bytes + kv_bytes
    if need <= usable:
        return OffloadPlan(
            ALL_LAYERS,
            "full",
            f"all {n_layers} layers on {names}: model {_gb(model_bytes)} + KV cache {_gb(kv_bytes)} "
            f"fit in {_gb(usable)} of free GPU memory",
            gpus,
        )
    # Layers are about equal in size; the KV cache grows with each offloaded layer too.
    per_layer = need / n_layers
    layers = int(usable // per_layer)
    if layers <= 0:
        return OffloadPlan(
            0,
            "cpu",
            f"{names} has {_gb(usable)} of free memory, too little for one layer of this model: running on the CPU",
        )
    return OffloadPlan(
        layers,
        "partial",
        f"{layers} of {n_layers} layers on {names}, the rest on the CPU: model {_gb(model_bytes)} + "
        f"KV cache {_gb(kv_bytes)} exceed the {_gb(usable)} of free GPU memory",
        gpus,
    )


def kv_cache_bytes(n_layers: int, n_kv_heads: int, head_dim: int, ctx_tokens: int, bytes_per_value: int = 2) -> int:
    """Size of llama.cpp's K and V caches for one sequence of `ctx_tokens` (f16 by default)."""
    return 2 * n_layers * n_kv_heads * head_dim * ctx_tokens * bytes_per_value


def system_memory() -> tuple[int, int]:
    """(free, total) bytes of RAM from the operating system, for when llama.cpp is unavailable."""
    total = 0
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 0
    free = 0
    if sys.platform.startswith("linux"):
        try:
            with open("/proc/meminfo", encoding="ascii") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        free = int(line.split()[1]) * 1024
                        break
        except OSError:
            free = 0
    # Without a count of reclaimable memory (macOS, BSD), half of RAM is a fair guess.
    return (free or total // 2, total)


def _fallback_devices() -> list[Device]:
    free, total = system_memory()
    return [Device(name="CPU", description="CPU (system memory)", kind="cpu", memory_free_bytes=free, memory_total_bytes=total)]


def probe_devices() -> list[Device]:
    """The devices llama.cpp sees, with free/total memory; the CPU from the OS if it can't."""
    try:
        from llamaedge import engine

        devices = engine.list_devices()
    except (ImportError, OSError, AttributeError, RuntimeError) as err:
        log.debug("llama.cpp devices unavailable (%s); using system memory", err)
        return _fallback_devices()
    if not any(d.kind == "cpu" for d in devices):
        devices = [*devices, *_fallback_devices()]
    return devices


def gpu_offload_supported() -> bool:
    try:
        from llamaedge import engine

        return bool(engine.supports_gpu_offload())
    except (ImportError, OSError, AttributeError, RuntimeError) as err:
        log.debug("cannot ask llama.cpp about GPU offload (%s)", err)
        return False
