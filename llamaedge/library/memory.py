"""What a model needs and what there is: the estimate made before a load, the budget it is
held against, and where its layers go (through gpu.plan_offload, as `serve` plans one model).

The estimate (`estimate_need`), for a model of W bytes of weights in a context of C cells:
- weights: the file's size (llama.cpp maps the file; the layers offloaded move to the GPU);
- KV cache: gpu.kv_cache_bytes for C cells (the cache is unified: the slots share the C
  cells, so slots add no KV of their own);
- compute: on the host 4 bytes x ubatch x (4 x n_embd + n_ff) for the graph's intermediate
  tensors, plus the logits of one token per slot, plus COMPUTE_OVERHEAD_BYTES; on a GPU, the
  logits of a whole ubatch, as llama.cpp reserves them there;
- an embedding model also gets the embedding context (engine.EMBED_CTX_MAX cells);
- a vision model's projector: its file's size, on the GPU when any layer is (the engine puts
  the projector there then), else in RAM. The image encoder's compute buffer, allocated when
  the projector loads, is not counted: it depends on the projector's type and image size.
Measured on SmolLM2-135M on the CPU (RSS after load and one warm-up token): 193 MiB for
4096 cells against an estimate of 201 MiB, 113 MiB for 512 cells against 121 MiB.

The budget (`MemoryBudget`): the RAM free when the library starts, less a reserve of
(1 - catalog.MEMORY_SHARE) of it for the system and the other programs; the GPUs' free memory
less gpu.GPU_RESERVE_BYTES each. A load also has to fit what is free at that moment, less
the same reserves and less what loads under way will still take: so memory that other
programs took since the start counts too. LibraryConfig.memory_budget_bytes replaces the
measured RAM budget (and its check against what is free now).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from llamaedge import gpu
from llamaedge.catalog import MEMORY_SHARE
from llamaedge.engine import EMBED_CTX_MAX, LoadOptions, context_size, default_parallel
from llamaedge.library.types import NO_MEMORY, MemoryNeed, ModelFacts
from llamaedge.types import Device

# Host memory a loaded model takes beyond the formula: threads' stacks, the sampler, the chat
# templates, the allocator's slack.
COMPUTE_OVERHEAD_BYTES = 8 * 1024 * 1024
FLOAT_BYTES = 4

# The devices and whether this llama.cpp build can offload (gpu.probe_devices and
# gpu.gpu_offload_supported; tests give fixed ones).
Probe = Callable[[], tuple[list[Device], bool]]


def probe_devices() -> tuple[list[Device], bool]:
    """The GPUs as llama.cpp reports them, and the RAM as the system does: llama.cpp's CPU
    device reports the total memory as free."""
    free, total = gpu.system_memory()
    devices = [d for d in gpu.probe_devices() if d.kind != "cpu"]
    return [*devices, Device("CPU", "system memory", "cpu", free, total)], gpu.gpu_offload_supported()


def _gpus(devices: list[Device], offload: bool) -> list[Device]:
    return [d for d in devices if d.kind in gpu.GPU_KINDS] if offload else []


def free_memory(devices: list[Device], offload: bool) -> MemoryNeed:
    """Free RAM (the CPU devices) and free GPU memory (the GPUs, when llama.cpp can offload)."""
    return MemoryNeed(sum(d.memory_free_bytes for d in devices if d.kind == "cpu"),
                      sum(d.memory_free_bytes for d in _gpus(devices, offload)))


def _context_need(facts: ModelFacts, ctx_tokens: int, slots: int, ubatch: int) -> tuple[int, int, int]:
    """(KV cache, host compute, GPU compute) bytes of one llama context."""
    kv = gpu.kv_cache_bytes(facts.n_layers, facts.n_kv_heads, facts.head_dim, ctx_tokens)
    host = FLOAT_BYTES * (ubatch * (4 * facts.n_embd + facts.n_ff) + facts.n_vocab * slots)
    device = FLOAT_BYTES * ubatch * (facts.n_embd + facts.n_vocab)
    return kv, host, device


def estimate_need(facts: ModelFacts, options: LoadOptions, *, embedding: bool = False,
                  projector_bytes: int = 0) -> MemoryNeed:
    """What `facts`' model takes once loaded with `options` (see the module's docstring), with
    a projector of `projector_bytes` beside it."""
    ctx = context_size(options.ctx_size, facts.n_ctx_train)
    slots = max(1, options.parallel) if options.parallel is not None else default_parallel(ctx)
    ubatch = min(options.ubatch_size, options.batch_size)
    kv, host, device = _context_need(facts, ctx, slots, ubatch)
    if embedding:
        embed_ctx = min(facts.n_ctx_train or EMBED_CTX_MAX, EMBED_CTX_MAX)
        kv_e, host_e, device_e = _context_need(facts, embed_ctx, 1, ubatch)
        kv, host, device = kv + kv_e, host + host_e, device + device_e
    host += COMPUTE_OVERHEAD_BYTES
    n_layers = max(1, facts.n_layers)
    layers = options.n_gpu_layers
    on_gpu = n_layers if layers < 0 or layers >= n_layers else layers
    if on_gpu == 0:
        return MemoryNeed(facts.size_bytes + kv + host + projector_bytes, 0)
    # Layers are about equal in size, and each offloaded layer takes its part of the KV cache along.
    gpu_part = (facts.size_bytes + kv) * on_gpu // n_layers
    return MemoryNeed(facts.size_bytes + kv - gpu_part + host, gpu_part + device + projector_bytes)


def human(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:.2f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.0f} MiB"


def describe(need: MemoryNeed) -> str:
    return human(need.ram_bytes) + (f" of RAM and {human(need.vram_bytes)} of GPU memory" if need.vram_bytes else " of RAM")


@dataclass
class MemoryBudget:
    """The memory the library's models may take (see the module's docstring). Made once, when
    the library starts; `room` is asked before every load."""

    probe: Probe
    ram_budget_bytes: int | None = None

    def __post_init__(self) -> None:
        devices, offload = self.probe()
        self.devices, self.offload = devices, offload  # at the start: what plans are made against
        free = free_memory(devices, offload)
        self.reserve = MemoryNeed(int(free.ram_bytes * (1 - MEMORY_SHARE)),
                                  gpu.GPU_RESERVE_BYTES * len(_gpus(devices, offload)))
        usable = free - self.reserve
        self.capacity = MemoryNeed(self.ram_budget_bytes if self.ram_budget_bytes is not None else usable.ram_bytes,
                                   max(0, usable.vram_bytes))

    def room(self, held: MemoryNeed, loading: MemoryNeed = NO_MEMORY) -> MemoryNeed:
        """What a new model may take: the capacity less what the models `held` take (those
        loaded and loading), and no more than what is free now less the reserve and less what
        the loads under way (`loading`) will still take."""
        room = self.capacity - held
        if self.ram_budget_bytes is None:
            now = free_memory(*self.probe()) - self.reserve - loading
            room = MemoryNeed(min(room.ram_bytes, now.ram_bytes), min(room.vram_bytes, now.vram_bytes))
        return room

    def gpu_layers(self, facts: ModelFacts, options: LoadOptions, asked: int | None) -> int:
        """The n_gpu_layers to load `facts`' model with: `asked` (--n-gpu-layers), else what
        fits the GPUs as they were at the start: each model is planned as if it had them alone,
        and models that do not fit together are unloaded for it (the library's LRU) rather
        than squeezed onto the CPU."""
        if asked is not None:
            return asked
        if not _gpus(self.devices, self.offload):
            return 0
        kv = gpu.kv_cache_bytes(facts.n_layers, facts.n_kv_heads, facts.head_dim,
                                context_size(options.ctx_size, facts.n_ctx_train))
        return gpu.plan_offload(facts.size_bytes, max(1, facts.n_layers), kv, self.devices, self.offload).n_gpu_layers
