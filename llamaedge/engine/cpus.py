"""How many CPUs this process may use for llama.cpp's threads.

`os.cpu_count()` counts the machine's CPUs: on a 2-CPU pod of a 64-core node it says 64, and
64 threads that wait for each other at every step of a token, on 2 CPUs' worth of time, crawl.
What the process may use is less:

- the CPUs of its affinity mask (taskset, a cpuset cgroup, Kubernetes' static CPU manager);
- of those, the physical cores, as llama.cpp's own default counts them (common/common.cpp,
  `common_cpu_get_num_math`: one thread per core, since a core's hardware threads share its
  vector units; on a hybrid Intel CPU the performance cores only, since "efficiency cores harm
  lockstep threading");
- at most its cgroup's CPU bandwidth (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us` over
  `cpu.cfs_period_us`, along the cgroup's path up to its mount: a container's CPU limit),
  rounded down, since a thread beyond the quota is throttled and the others wait for it.

`count_cpus` takes the file system root and the affinity as arguments, so tests run it on a
fake /proc and /sys tree.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

# Intel hybrid CPUs list their performance and efficiency cores here (the kernel's cpu_core
# and cpu_atom PMUs); other machines have neither file.
PERFORMANCE_CORES = "sys/devices/cpu_core/cpus"
EFFICIENCY_CORES = "sys/devices/cpu_atom/cpus"
CPU_TOPOLOGY = "sys/devices/system/cpu/cpu{}/topology/thread_siblings_list"


@dataclass(frozen=True)
class CpuCount:
    """What the process may use, and the numbers it was worked out from."""

    online: int | None  # os.cpu_count(): the machine's CPUs
    allowed: int  # CPUs in the affinity mask
    physical: int  # physical (performance) cores among them
    quota_cpus: float | None  # the cgroup's CPU bandwidth in CPUs; None: no limit
    usable: int  # physical cores, at most the quota rounded down, at least 1


def parse_cpu_list(text: str) -> set[int]:
    """The kernel's CPU list format: "0-3,8,10-11"."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def physical_cores(root: Path, cpus: Collection[int]) -> int:
    """Cores among `cpus`: CPUs that are hardware threads of one core count once; a hybrid CPU's
    efficiency cores do not count unless they are all the process may use."""
    performance = _read(root / PERFORMANCE_CORES)
    if performance is not None and _read(root / EFFICIENCY_CORES) is not None:
        cpus = (set(cpus) & parse_cpu_list(performance)) or cpus
    cores: set[str] = set()
    for cpu in cpus:
        siblings = _read(root / CPU_TOPOLOGY.format(cpu))
        # Without topology (some containers hide it), each CPU is taken as a core of its own.
        cores.add(siblings.strip() if siblings else f"cpu{cpu}")
    return len(cores)


@dataclass(frozen=True)
class _Mount:
    root: PurePosixPath  # the cgroup path at the mount point
    point: Path  # where it is mounted, under the file system root
    fstype: str
    options: frozenset[str]


def _mounts(root: Path) -> list[_Mount]:
    """The cgroup mounts of /proc/self/mountinfo ("ID PARENT DEV ROOT POINT OPTS ... - TYPE SRC SUPEROPTS")."""
    mounts = []
    for line in (_read(root / "proc/self/mountinfo") or "").splitlines():
        fields, _, tail = line.partition(" - ")
        before, after = fields.split(), tail.split()
        if len(before) < 5 or len(after) < 3 or after[0] not in ("cgroup", "cgroup2"):
            continue
        point = before[4].replace("\\040", " ")
        mounts.append(_Mount(PurePosixPath(before[3]), root / point.lstrip("/"), after[0], frozenset(after[2].split(","))))
    return mounts


def _cgroup_dirs(mount: _Mount, path: str) -> list[Path]:
    """The process's cgroup directory under `mount` and its ancestors up to the mount point: a
    limit on any of them applies."""
    try:
        relative = PurePosixPath(path).relative_to(mount.root)
    except ValueError:  # the path lies outside what is mounted (a container's view): the mount's own
        relative = PurePosixPath()
    dirs = [mount.point / relative]
    while dirs[-1] != mount.point:
        dirs.append(dirs[-1].parent)
    return dirs


def _ratio(quota: str | None, period: str | None) -> float | None:
    """quota/period in CPUs; None for no limit ("max", -1) or what cannot be read."""
    try:
        q, p = int(quota or ""), int(period or "")
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def _v2_quota(directory: Path) -> float | None:
    quota, _, period = (_read(directory / "cpu.max") or "").strip().partition(" ")  # "max 100000", "200000 100000"
    return _ratio(quota, period)


def _v1_quota(directory: Path) -> float | None:
    return _ratio(_read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us"))


def cgroup_quota_cpus(root: Path) -> float | None:
    """The tightest CPU bandwidth limit on this process's cgroups (v2 and v1), in CPUs."""
    mounts = _mounts(root)
    quotas: list[float] = []
    for line in (_read(root / "proc/self/cgroup") or "").splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and not controllers:
            matching = [(m, _v2_quota) for m in mounts if m.fstype == "cgroup2"]
        elif "cpu" in controllers.split(","):
            matching = [(m, _v1_quota) for m in mounts if m.fstype == "cgroup" and "cpu" in m.options]
        else:
            continue
        for mount, read_quota in matching:
            quotas.extend(q for d in _cgroup_dirs(mount, path) if (q := read_quota(d)) is not None)
    return min(quotas) if quotas else None


def _affinity() -> set[int]:
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))  # macOS, Windows: no affinity to read


def count_cpus(root: Path = Path("/"), affinity: Collection[int] | None = None) -> CpuCount:
    """The CPUs this process may use (see the module's docstring); `root` and `affinity` are
    the seams for tests (defaults: the real file system, the process's affinity)."""
    allowed = set(_affinity() if affinity is None else affinity)
    physical = physical_cores(root, allowed) if allowed else 1
    quota = cgroup_quota_cpus(root)
    usable = min(physical, math.floor(quota)) if quota is not None else physical
    return CpuCount(online=os.cpu_count(), allowed=len(allowed), physical=physical, quota_cpus=quota, usable=max(1, usable))


def usable_cpus() -> int:
    """The CPUs this process may use for llama.cpp's threads."""
    return count_cpus().usable
