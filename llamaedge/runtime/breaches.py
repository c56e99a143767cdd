"""The breaches of a policy: what fails one request of a mounted app, or one call of a tool,
that went beyond what its policy grants (policy.py) during its run (guard.py). The tree, with
where each is raised, is drawn in llamaedge/errors.py; each class line here names its HTTP
status, error code and error kind, which clients see.

A module of its own that imports nothing of the runtime, so that the grant side (policy.py),
the enforcement (guard.py) and the host modules (host.py, http.py, tools.py) all import it and
the imports stay one-way.
"""

from __future__ import annotations

from typing import Any

from llamaedge.errors import AppError


class PolicyBreach(AppError):
    """A request that went beyond its app's policy. `status` and `code` are its HTTP error,
    `kind` the error kind of server/api_errors.py. Each breach names its own three in its
    class line (`class X(PolicyBreach, code=..., status=..., kind=...)`)."""

    status = 500
    code = "app_policy"
    kind = "server"

    def __init_subclass__(cls, *, code: str, status: int = 500, kind: str = "server", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.code, cls.status, cls.kind = code, status, kind


class ModelNotAllowed(PolicyBreach, code="model_not_allowed", status=403, kind="permission"):
    """It asked for a model its policy does not grant, or for a model file by path."""


class HostNotAllowed(PolicyBreach, code="host_not_allowed", status=403, kind="permission"):
    """It fetched from a host its policy does not grant."""


class PolicyWidening(PolicyBreach, code="policy_widening", status=403, kind="permission"):
    """A nested call whose callee is granted what its caller is not."""


class OutputTooLarge(PolicyBreach, code="output_too_large"):
    """A tool wrote more than its output limit."""


class WallTimeExceeded(PolicyBreach, code="wall_time_exceeded", status=504):
    """It ran past its wall time."""


class MemoryLimitReached(PolicyBreach, code="memory_limit_exceeded"):
    """It failed at its memory limit."""
