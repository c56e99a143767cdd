"""The offload decision over faked device lists, and the model pick for a memory budget."""

from __future__ import annotations

import pytest

from llamaedge import catalog, gpu
from llamaedge.types import Device

GB = 1_000_000_000
GiB = 1024**3


def cpu(free: int = 16 * GiB) -> Device:
    return Device("CPU", "AMD EPYC", "cpu", free, 32 * GiB)


def cuda(free: int, name: str = "CUDA0", description: str = "NVIDIA GeForce RTX 4090") -> Device:
    return Device(name, description, "gpu", free, free + GiB)


RESERVE = gpu.GPU_RESERVE_BYTES

# (case, model bytes, layers, kv bytes, devices, build can offload, n_gpu_layers, mode)
CASES = [
    ("no GPU backend in the build", 4 * GB, 32, GB, [cpu(), cuda(80 * GB)], False, 0, "cpu"),
    ("CPU only machine", 4 * GB, 32, GB, [cpu()], True, 0, "cpu"),
    ("an accelerator is not a GPU", 4 * GB, 32, GB, [cpu(), Device("BLAS", "OpenBLAS", "accel", 0, 0)], True, 0, "cpu"),
    ("fits with room to spare", 4 * GB, 32, GB, [cpu(), cuda(24 * GB)], True, -1, "full"),
    ("fits exactly after the reserve", 4 * GB, 32, GB, [cpu(), cuda(5 * GB + RESERVE)], True, -1, "full"),
    ("one byte short: partial", 4 * GB, 32, GB, [cpu(), cuda(5 * GB + RESERVE - 1)], True, 31, "partial"),
    ("half fits", 4 * GB, 32, 4 * GB, [cpu(), cuda(4 * GB + RESERVE)], True, 16, "partial"),
    ("two GPUs pool their memory", 8 * GB, 32, 2 * GB, [cpu(), cuda(6 * GB, "CUDA0"), cuda(6 * GB, "CUDA1")], True, -1, "full"),
    ("too little for one layer", 8 * GB, 32, 0, [cpu(), cuda(RESERVE + 100)], True, 0, "cpu"),
    ("GPU fully used by others", 4 * GB, 32, GB, [cpu(), cuda(0)], True, 0, "cpu"),
    ("integrated GPU counts", 2 * GB, 16, GB // 2, [cpu(), Device("Metal", "Apple M2", "igpu", 12 * GB, 16 * GB)], True, -1, "full"),
]


@pytest.mark.parametrize(
    ("model_bytes", "n_layers", "kv_bytes", "devices", "supports", "layers", "mode"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_plan_offload(
    model_bytes: int, n_layers: int, kv_bytes: int, devices: list[Device], supports: bool, layers: int, mode: str
) -> None:
    plan = gpu.plan_offload(model_bytes, n_layers, kv_bytes, devices, supports)
    assert (plan.n_gpu_layers, plan.mode) == (layers, mode)
    if mode == "cpu":
        assert plan.devices == ()
        assert "CPU" in plan.reason
    else:
        assert plan.devices and all(d.kind in gpu.GPU_KINDS for d in plan.devices)


def test_plan_reasons_name_the_device_and_the_numbers() -> None:
    full = gpu.plan_offload(4 * GB, 32, GB, [cpu(), cuda(24 * GB)], True)
    assert full.reason.startswith("all 32 layers on NVIDIA GeForce RTX 4090")
    assert "model 4.0 GB + KV cache 1.0 GB" in full.reason
    partial = gpu.plan_offload(4 * GB, 32, 4 * GB, [cpu(), cuda(4 * GB + RESERVE)], True)
    assert partial.reason.startswith("16 of 32 layers on NVIDIA GeForce RTX 4090, the rest on the CPU")
    assert "no GPU backend" in gpu.plan_offload(GB, 8, 0, [cpu()], False).reason
    assert "no GPU found" in gpu.plan_offload(GB, 8, 0, [cpu()], True).reason


def test_plan_rejects_a_model_without_layers() -> None:
    with pytest.raises(ValueError):
        gpu.plan_offload(GB, 0, 0, [cpu()], True)


def test_kv_cache_bytes_matches_llama_3_8b() -> None:
    # 32 layers x 8 KV heads x 128 dims, K and V in f16: 128 KiB per token.
    assert gpu.kv_cache_bytes(32, 8, 128, 4096) == 512 * 1024 * 1024


def test_system_memory_is_plausible() -> None:
    free, total = gpu.system_memory()
    assert 0 < free <= total


def test_probe_devices_always_includes_the_cpu() -> None:
    devices = gpu.probe_devices()
    assert any(d.kind == "cpu" and d.memory_total_bytes > 0 for d in devices)


# ---- picking a model for a budget ------------------------------------------------------------


def budget(ram: int, vram: int = 0) -> catalog.MemoryBudget:
    return catalog.MemoryBudget(vram_free_bytes=vram, ram_free_bytes=ram, gpu_offload=vram > 0)


def test_big_gpu_gets_the_best_ranked_model() -> None:
    entry, reason = catalog.pick_default(budget(64 * GiB, 24 * GiB))
    best = max((e for e in catalog.load_catalog() if e.default_rank and not e.embedded), key=lambda e: e.default_rank or 0)
    assert entry == best
    assert "GPU memory" in reason


def test_cpu_only_machine_stays_small_for_speed() -> None:
    entry, reason = catalog.pick_default(budget(64 * GiB))
    assert entry.parameters_b <= catalog.CPU_DEFAULT_PARAMS_MAX_B
    assert "no GPU offload" in reason and "RAM" in reason


def test_small_gpu_falls_back_to_ram_choice() -> None:
    tiny_gpu, _ = catalog.pick_default(budget(64 * GiB, GiB // 4))
    cpu_only, _ = catalog.pick_default(budget(64 * GiB))
    assert tiny_gpu == cpu_only


def test_pick_respects_memory() -> None:
    for ram in (2 * GiB, 4 * GiB, 8 * GiB):
        entry, _ = catalog.pick_default(budget(ram))
        assert entry.memory_bytes <= ram * catalog.MEMORY_SHARE


def test_too_little_memory_picks_the_built_in_model() -> None:
    entry, reason = catalog.pick_default(budget(GiB // 2))
    assert entry.name == catalog.EMBEDDED_NAME
    assert "too little" in reason


def test_budget_from_devices() -> None:
    devices = [cpu(10 * GiB), cuda(6 * GiB), cuda(2 * GiB, "CUDA1")]
    with_gpu = catalog.MemoryBudget.from_devices(devices, True)
    assert (with_gpu.ram_free_bytes, with_gpu.vram_free_bytes, with_gpu.gpu_offload) == (10 * GiB, 8 * GiB, True)
    cpu_build = catalog.MemoryBudget.from_devices(devices, False)
    assert (cpu_build.vram_free_bytes, cpu_build.gpu_offload) == (0, False)


def test_fit_labels() -> None:
    entry = catalog.find_entry("llama3.1-8b")
    assert entry is not None
    assert catalog.fit(entry, budget(64 * GiB, 24 * GiB)) == "gpu"
    assert catalog.fit(entry, budget(64 * GiB, 2 * GiB)) == "ram"
    assert catalog.fit(entry, budget(2 * GiB)) == "no"
