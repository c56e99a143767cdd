"""Defaults of the server's limits, read by both the command line and the server (kept out
of server.py so that the CLI can show them without importing the engine)."""

QUEUE_MAX_PER_SLOT = 4  # the default --queue-max: this many waiting requests per --parallel slot
DRAIN_S = 20.0  # the default --drain-s; below Kubernetes' default 30 s termination grace period
