"""Defaults of the server's limits, read by both the command line and the server (kept out
of the server package so that the CLI can show them without importing the engine)."""

QUEUE_MAX_PER_SLOT = 4  # the default --queue-max: this many waiting requests per slot
DRAIN_S = 20.0  # the default --drain-s; below Kubernetes' default 30 s termination grace period
# The largest request body: the host reads at most one byte more and gives every app this
# limit as LLAMAEDGE_MAX_BODY_BYTES, so host and apps refuse at the same size. (The apps'
# built-in default, 1 MiB, is for a host that does not set the variable.) Room for a long
# conversation with a few inline images.
MAX_BODY_BYTES = 8 * 1024 * 1024


def queue_limit(slots: int, queue_max: int | None) -> int:
    """Requests that may wait beyond the slots: --queue-max, else QUEUE_MAX_PER_SLOT per slot."""
    return QUEUE_MAX_PER_SLOT * slots if queue_max is None else queue_max
