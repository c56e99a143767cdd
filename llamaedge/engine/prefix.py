"""The common prefix of two token sequences: how much of a slot's cached prompt a new one
reuses (the scheduler choosing a slot, the decoder copying cells between slots)."""

from __future__ import annotations

from collections.abc import Sequence


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """The length of the common prefix of two token sequences, by halving: slices of arrays
    compare in C, so long texts that differ near their ends cost little."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo
