"""Counting the CPUs the process may use, on fake /proc and /sys trees: affinity, hardware
threads of one core, a hybrid CPU's efficiency cores, cgroup v2 and v1 CPU quotas."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamaedge.engine.cpus import count_cpus, parse_cpu_list, usable_cpus

V2_MOUNT = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate"
V1_MOUNTS = "\n".join([
    "31 23 0:28 / /sys/fs/cgroup tmpfs rw - tmpfs tmpfs rw,mode=755",
    "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct",
    "33 31 0:30 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory",
])


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def machine(root: Path, siblings: list[str]) -> Path:
    """CPU n's topology lists `siblings[n]` (its core's hardware threads); no cgroup files."""
    for cpu, text in enumerate(siblings):
        write(root, f"sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list", text + "\n")
    return root


@pytest.mark.parametrize(("text", "cpus"), [
    ("0", {0}), ("0-3", {0, 1, 2, 3}), ("0-1,8,10-11\n", {0, 1, 8, 10, 11}), ("", set()),
])
def test_cpu_lists_parse_as_the_kernel_writes_them(text: str, cpus: set[int]) -> None:
    assert parse_cpu_list(text) == cpus


def test_hardware_threads_of_one_core_count_once(tmp_path: Path) -> None:
    # 4 cores with 2 hardware threads each, numbered as Linux does on x86: n and n+4 share a core.
    root = machine(tmp_path, ["0,4", "1,5", "2,6", "3,7"] * 2)
    count = count_cpus(root, affinity=range(8))
    assert (count.allowed, count.physical, count.quota_cpus, count.usable) == (8, 4, None, 4)


def test_only_the_cpus_of_the_affinity_mask_count(tmp_path: Path) -> None:
    root = machine(tmp_path, ["0,4", "1,5", "2,6", "3,7"] * 2)
    # CPUs 0 and 4 are one core; 1 another: a pod pinned to three hardware threads gets 2 cores.
    count = count_cpus(root, affinity={0, 4, 1})
    assert (count.allowed, count.physical, count.usable) == (3, 2, 2)


def test_without_topology_each_cpu_is_a_core(tmp_path: Path) -> None:
    assert count_cpus(tmp_path, affinity={0, 1, 2}).usable == 3


def test_a_hybrid_cpu_counts_its_performance_cores_only(tmp_path: Path) -> None:
    # 2 performance cores with 2 threads each (CPUs 0-3), 4 efficiency cores (CPUs 4-7).
    root = machine(tmp_path, ["0-1", "0-1", "2-3", "2-3", "4", "5", "6", "7"])
    write(root, "sys/devices/cpu_core/cpus", "0-3\n")
    write(root, "sys/devices/cpu_atom/cpus", "4-7\n")
    assert count_cpus(root, affinity=range(8)).usable == 2
    # Pinned to efficiency cores only, those are what there is.
    assert count_cpus(root, affinity={5, 6}).usable == 2


@pytest.mark.parametrize(("cpu_max", "usable", "quota"), [
    ("200000 100000\n", 2, 2.0),
    ("150000 100000\n", 1, 1.5),  # rounded down: a thread beyond the quota is throttled
    ("50000 100000\n", 1, 0.5),  # at least one thread
    ("max 100000\n", 64, None),
])
def test_cgroup_v2_cpu_max_caps_the_count(tmp_path: Path, cpu_max: str, usable: int, quota: float | None) -> None:
    # A 2-CPU pod on a 64-core node: os.cpu_count() and the affinity say 64.
    root = machine(tmp_path, [str(n) for n in range(64)])
    write(root, "proc/self/mountinfo", V2_MOUNT + "\n")
    write(root, "proc/self/cgroup", "0::/kubepods/pod1/ctr\n")
    write(root, "sys/fs/cgroup/kubepods/pod1/ctr/cpu.max", cpu_max)
    count = count_cpus(root, affinity=range(64))
    assert (count.usable, count.quota_cpus) == (usable, quota)


def test_a_limit_on_a_parent_cgroup_applies(tmp_path: Path) -> None:
    root = machine(tmp_path, [str(n) for n in range(16)])
    write(root, "proc/self/mountinfo", V2_MOUNT + "\n")
    write(root, "proc/self/cgroup", "0::/pod/ctr\n")
    write(root, "sys/fs/cgroup/pod/cpu.max", "300000 100000\n")
    write(root, "sys/fs/cgroup/pod/ctr/cpu.max", "max 100000\n")
    assert count_cpus(root, affinity=range(16)).usable == 3


def test_a_cgroup_namespace_reads_the_mount_itself(tmp_path: Path) -> None:
    # Inside a container with its own cgroup namespace the path is "/" and the limit sits at the mount.
    root = machine(tmp_path, [str(n) for n in range(8)])
    write(root, "proc/self/mountinfo", V2_MOUNT + "\n")
    write(root, "proc/self/cgroup", "0::/\n")
    write(root, "sys/fs/cgroup/cpu.max", "400000 100000\n")
    assert count_cpus(root, affinity=range(8)).usable == 4


def test_cgroup_v1_cfs_quota_caps_the_count(tmp_path: Path) -> None:
    root = machine(tmp_path, [str(n) for n in range(32)])
    # Without a cgroup namespace the path is the host's; the mount's root is that same path.
    write(root, "proc/self/mountinfo",
          V1_MOUNTS.replace("0:29 / /sys/fs/cgroup/cpu,cpuacct", "0:29 /docker/abc /sys/fs/cgroup/cpu,cpuacct") + "\n")
    write(root, "proc/self/cgroup", "5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n")
    write(root, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "250000\n")
    write(root, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n")
    count = count_cpus(root, affinity=range(32))
    assert (count.usable, count.quota_cpus) == (2, 2.5)


def test_cgroup_v1_without_a_quota_leaves_the_cores(tmp_path: Path) -> None:
    root = machine(tmp_path, ["0", "1"])
    write(root, "proc/self/mountinfo", V1_MOUNTS + "\n")
    write(root, "proc/self/cgroup", "4:cpu,cpuacct:/\n")
    write(root, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n")
    write(root, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n")
    count = count_cpus(root, affinity={0, 1})
    assert (count.usable, count.quota_cpus) == (2, None)


def test_unreadable_cgroup_files_mean_no_limit(tmp_path: Path) -> None:
    root = machine(tmp_path, ["0", "1", "2"])
    write(root, "proc/self/mountinfo", V2_MOUNT + "\n")
    write(root, "proc/self/cgroup", "0::/ctr\n")
    write(root, "sys/fs/cgroup/ctr/cpu.max", "garbage\n")
    assert count_cpus(root, affinity=range(3)).usable == 3


def test_this_machine_gives_at_least_one_and_no_more_than_its_cpus() -> None:
    count = count_cpus()
    assert 1 <= count.usable == usable_cpus() <= count.allowed <= (count.online or count.allowed)
