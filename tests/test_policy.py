"""The breaches of a policy (runtime/breaches.py): the HTTP status, error code and error kind
each one fails its request with are what clients see, so they are pinned here, row per class.
How each is raised is tested where it happens (test_serve_apps.py, test_tools.py)."""

from __future__ import annotations

import pytest

from llamaedge.engine.contract import Generation, LoadedModel
from llamaedge.errors import AppError
from llamaedge.runtime import PolicyBreach
from llamaedge.runtime.breaches import (
    HostNotAllowed,
    MemoryLimitReached,
    ModelNotAllowed,
    OutputTooLarge,
    PolicyWidening,
    WallTimeExceeded,
)
from llamaedge.runtime.guard import BudgetedModel, BudgetedSequence
from llamaedge.server.api_errors import host_error


@pytest.mark.parametrize(("breach", "status", "code", "kind"), [
    (PolicyBreach, 500, "app_policy", "server"),
    (ModelNotAllowed, 403, "model_not_allowed", "permission"),
    (HostNotAllowed, 403, "host_not_allowed", "permission"),
    (PolicyWidening, 403, "policy_widening", "permission"),
    (OutputTooLarge, 500, "output_too_large", "server"),
    (WallTimeExceeded, 504, "wall_time_exceeded", "server"),
    (MemoryLimitReached, 500, "memory_limit_exceeded", "server"),
])
def test_each_breach_fails_its_request_with_its_own_status_code_and_kind(
        breach: type[PolicyBreach], status: int, code: str, kind: str) -> None:
    err = breach("app may not do that", hint="grant it")
    assert isinstance(err, PolicyBreach) and isinstance(err, AppError)
    assert (err.status, err.code, err.kind) == (status, code, kind)
    assert (str(err), err.hint) == ("app may not do that", "grant it")
    # The kind is one the server's error shapes know (an unknown one would fail the response).
    assert host_error("/v1/chat/completions", err.status, str(err), kind=err.kind, code=err.code).status_code == status


@pytest.mark.parametrize(("wrapper", "protocol"), [(BudgetedModel, LoadedModel), (BudgetedSequence, Generation)])
def test_the_policy_wrappers_offer_all_the_engine_contract_offers(wrapper: type, protocol: type) -> None:
    """An app under a policy sees the model through these wrappers: a member they lack is an
    AttributeError in the middle of its request (rerank once failed so)."""
    members = {name for name in vars(protocol) if not name.startswith("_")}
    assert members and members <= set(dir(wrapper))
