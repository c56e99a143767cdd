"""Downloads of members (POST /models/pull): what may be pulled, the download itself on a
thread of the library's, and the member's state when it ends. Progress goes out as events."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from llamaedge import catalog
from llamaedge.download import ProgressEvent
from llamaedge.errors import DownloadCancelled, LlamaEdgeError
from llamaedge.library.errors import ModelStateError
from llamaedge.library.events import EventHub, LibraryEvent, status_change
from llamaedge.library.loader import M
from llamaedge.library.state import Member
from llamaedge.library.types import Source, Status
from llamaedge.types import ResolvedModel

log = logging.getLogger("llamaedge.library")

CANCELLED = "cancelled"

Progress = dict[str, dict[str, int | None]]


def spec_to_pull(member: Member[M]) -> str:
    """What `member` is downloaded by; ModelStateError when it is downloaded, being
    downloaded, or not downloadable (a local file, the embedded model)."""
    name, spec = member.name, member.source.spec
    if member.status is Status.DOWNLOADING:
        raise ModelStateError(f"the model '{name}' is being downloaded", code="model_already_downloading",
                              model=name, hint="GET /models/sse shows its progress")
    if member.source.path is not None:
        raise ModelStateError(f"the model '{name}' is downloaded already", code="model_already_downloaded",
                              model=name)
    if spec is None:
        raise ModelStateError(f"the model '{name}' cannot be downloaded", code="model_not_downloadable",
                              model=name)
    return spec


def progress_of(event: ProgressEvent) -> Progress | None:
    """A download event as the member's progress, or None for an event that is not progress."""
    if event.status in ("downloading", "verifying"):
        return {event.name: {"done": event.completed, "total": event.total}}
    return None


def fetch(name: str, spec: str, models_dir: Path, cancel: threading.Event,
          on_progress: Callable[[ProgressEvent], None]) -> tuple[ResolvedModel | None, str | None]:
    """Download `spec` into `models_dir` (a catalog entry's projector with it): the model's
    file and projector, or None and why (CANCELLED when `cancel` was set)."""
    try:
        return catalog.resolve_model(spec, models_dir=models_dir, pull=True, on_progress=on_progress,
                                     cancel=cancel), None
    except DownloadCancelled:
        return None, CANCELLED
    except LlamaEdgeError as err:
        return None, str(err)
    except Exception as exc:
        log.exception("downloading %s failed", name)
        return None, f"internal error: {exc}"


def settle(member: Member[M], resolved: ResolvedModel | None, failure: str | None, events: EventHub) -> None:
    """The member's state once its download ended (under the library's condition): a file
    (and its projector), unloaded; cancelled, unloaded as before; else failed."""
    member.progress, member.cancel = None, None
    if resolved is not None:
        kind = Source.MODELS_DIR if member.source.source is Source.CATALOG else member.source.source
        member.source = replace(member.source, path=resolved.path, source=kind, mmproj=resolved.mmproj)
        member.facts, member.facts_error = None, None
        member.status = Status.UNLOADED
        events.publish(LibraryEvent(member.name, "download_finished"))
        status: dict[str, object] = {"status": Status.UNLOADED.value}
    elif failure == CANCELLED:
        member.status = Status.UNLOADED
        events.publish(LibraryEvent(member.name, "download_failed", {"reason": failure}))
        status = {"status": Status.UNLOADED.value, "reason": CANCELLED}
    else:
        member.status, member.failure = Status.FAILED, failure
        log.error("cannot download %s: %s", member.name, failure)
        events.publish(LibraryEvent(member.name, "download_failed", {"reason": failure}))
        status = {"status": Status.FAILED.value, "failed": True, "reason": failure}
    events.publish(status_change(member.name, status))
