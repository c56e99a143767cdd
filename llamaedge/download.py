"""Model downloads: the one module that imports huggingface_hub.

A download goes through the hub client (its headers, token, redirects and retries), into a
`<file>.part` next to the destination so a later run resumes it, then is checked against the
expected sha256 (the catalog's, else the hub's LFS hash) and moved into place atomically.
Progress is reported as `ProgressEvent` data to a callback; the terminal and HTTP draw it. A
callback that raises (a DownloadError of its own) stops the download at that event; the
partial file is kept, so a later download resumes it (the library cancels a pull so).

Every failure leaves as a `DownloadError` (or `OfflineError`) with a one-line message and a
hint; foreign exceptions are translated here and nowhere else.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import quote, urlsplit

from llamaedge.errors import DownloadCancelled, DownloadError, OfflineError

if TYPE_CHECKING:
    from huggingface_hub import errors as hf_errors

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# Room kept free on the disk beyond the file itself, so a download never fills it to the brim.
DISK_MARGIN_BYTES = 64 * 1024 * 1024
PROGRESS_INTERVAL_S = 0.1

@functools.cache
def _network_errors() -> tuple[type[BaseException], ...]:
    """The transport exceptions of whichever HTTP stack this huggingface_hub version uses
    (requests in 0.x, httpx in 1.x, httpx2 in 2.x), so they are caught precisely."""
    found: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module_name, names in (
        ("httpx2", ("TransportError", "TooManyRedirects")),
        ("httpx", ("TransportError", "TooManyRedirects")),
        ("requests", ("ConnectionError", "Timeout", "TooManyRedirects")),
    ):
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        found.extend(getattr(module, name) for name in names if hasattr(module, name))
    return tuple(found)


@functools.cache
def _hub() -> types.SimpleNamespace:
    """The hub client, imported on first download: with its HTTP stack it takes a good part
    of a second, which every other command (and a served model's cold start) is spared."""
    from huggingface_hub import errors
    from huggingface_hub.file_download import get_hf_file_metadata, http_get
    from huggingface_hub.utils import build_hf_headers, disable_progress_bars

    # We draw our own progress bar from events; the client's tqdm bars would print a second one.
    disable_progress_bars()
    return types.SimpleNamespace(errors=errors, get_hf_file_metadata=get_hf_file_metadata, http_get=http_get,
                                 build_hf_headers=build_hf_headers, network_errors=_network_errors())


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a download. `status` is resolving, downloading, verifying or done;
    `completed`/`total` are bytes (total None while unknown)."""

    name: str
    status: str
    completed: int = 0
    total: int | None = None


ProgressSink = Callable[[ProgressEvent], None]


@dataclass(frozen=True)
class RemoteFile:
    """A file to fetch: on the hub (repo + filename) or at a plain URL."""

    filename: str
    repo: str | None = None
    revision: str = "main"
    url: str | None = None
    sha256: str | None = None  # expected content hash, when known in advance

    @property
    def display_name(self) -> str:
        return f"{self.repo}/{self.filename}" if self.repo else self.filename


def hub_endpoint() -> str:
    """HF_ENDPOINT is read on every call (not at import) so a changed environment applies."""
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def hub_url(repo: str, filename: str, revision: str = "main") -> str:
    return f"{hub_endpoint()}/{repo}/resolve/{quote(revision, safe='')}/{quote(filename)}"


def partial_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _partial_meta_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part.json")


def partial_bytes(dest: Path) -> int:
    """Bytes of an interrupted download of `dest` kept for resuming (0 when none)."""
    try:
        return partial_path(dest).stat().st_size
    except FileNotFoundError:
        return 0


def remove_partial(dest: Path) -> None:
    partial_path(dest).unlink(missing_ok=True)
    _partial_meta_path(dest).unlink(missing_ok=True)


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


class _ProgressWriter:
    """The file object handed to the hub client: writes through to the .part file and turns
    the byte count into throttled progress events."""

    def __init__(self, file: BinaryIO, name: str, start: int, total: int | None, sink: ProgressSink,
                 cancel: threading.Event | None = None) -> None:
        self._file = file
        self._cancel = cancel
        self._name = name
        self._total = total
        self._sink = sink
        self.completed = start
        self._last_emit_s = 0.0

    def write(self, chunk: bytes) -> int:
        if self._cancel is not None and self._cancel.is_set():
            raise DownloadCancelled(f"the download of {self._name} was cancelled")
        written = self._file.write(chunk)
        self.completed += len(chunk)
        now = time.monotonic()
        if now - self._last_emit_s >= PROGRESS_INTERVAL_S:
            self._last_emit_s = now
            self._sink(ProgressEvent(self._name, "downloading", self.completed, self._total))
        return written

    # The client rewinds when a server ignores the Range header and resends everything.
    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        position = self._file.seek(offset, whence)
        self.completed = self._file.tell()
        return position

    def tell(self) -> int:
        return self._file.tell()

    def truncate(self, size: int | None = None) -> int:
        result = self._file.truncate(size)
        self.completed = self._file.tell()
        return result

    def flush(self) -> None:
        self._file.flush()


def _translate_http_error(err: hf_errors.HfHubHTTPError, remote: RemoteFile) -> DownloadError:
    errors = _hub().errors
    what = remote.display_name
    repo_page = f"{hub_endpoint()}/{remote.repo}" if remote.repo else remote.url
    if isinstance(err, errors.GatedRepoError):
        return DownloadError(
            f"{remote.repo} is a gated repository: its licence must be accepted before download",
            hint=f"accept it at {repo_page}, then log in with `hf auth login` or set HF_TOKEN",
        )
    if isinstance(err, errors.RepositoryNotFoundError):
        return DownloadError(
            f"repository {remote.repo} was not found on the hub (or is private)",
            hint="check the spelling; for a private repository log in with `hf auth login` or set HF_TOKEN",
        )
    if isinstance(err, errors.RevisionNotFoundError):
        return DownloadError(
            f"revision {remote.revision} of {remote.repo} was not found",
            hint="check the revision, or leave it out to use main",
        )
    if isinstance(err, errors.EntryNotFoundError):
        return DownloadError(
            f"{remote.filename} was not found in {remote.repo}",
            hint=f"see the files at {repo_page}/tree/main",
        )
    status = err.response.status_code if err.response is not None else None
    if status == 404:
        return DownloadError(f"{what} was not found (HTTP 404)", hint="check the URL")
    if status in (401, 403):
        return DownloadError(
            f"access to {what} was refused (HTTP {status})",
            hint="log in with `hf auth login` or set HF_TOKEN",
        )
    return DownloadError(
        f"the server answered HTTP {status} for {what}",
        hint="try again later; if it persists, check the URL or the hub's status",
    )


def _load_partial_meta(dest: Path) -> dict[str, str]:
    try:
        loaded = json.loads(_partial_meta_path(dest).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _check_disk(directory: Path, needed_bytes: int, name: str) -> None:
    free_bytes = shutil.disk_usage(directory).free
    if free_bytes < needed_bytes + DISK_MARGIN_BYTES:
        raise DownloadError(
            f"not enough disk space for {name}: it needs {human_bytes(needed_bytes)} more, "
            f"{human_bytes(free_bytes)} is free in {directory}",
            hint="free some space, or pass --models-dir (or set LLAMAEDGE_HOME) to a bigger disk",
        )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def download(remote: RemoteFile, dest: Path, *, on_progress: ProgressSink | None = None,
             cancel: threading.Event | None = None) -> Path:
    """Fetch `remote` to `dest` (resuming a kept partial), verify it, move it into place.
    `cancel`: once set, the download stops at the next chunk it receives (DownloadCancelled)."""
    sink: ProgressSink = on_progress or (lambda event: None)
    name = remote.display_name
    if is_offline():
        raise OfflineError(
            f"{name} is not downloaded and HF_HUB_OFFLINE is set",
            hint="unset HF_HUB_OFFLINE to download it, or use a model that is already here (llamaedge models)",
        )
    on_hub = remote.repo is not None
    url = hub_url(remote.repo, remote.filename, remote.revision) if remote.repo else remote.url
    if url is None:
        raise DownloadError(f"nothing to download for {name}: no repository and no URL")
    hub = _hub()
    # The hub token goes to the hub only, never to an arbitrary URL's host.
    headers = hub.build_hf_headers(token=None if on_hub else False)

    sink(ProgressEvent(name, "resolving"))
    try:
        meta = hub.get_hf_file_metadata(url, headers=headers, endpoint=hub_endpoint() if on_hub else None)
    except hub.errors.HfHubHTTPError as err:
        raise _translate_http_error(err, remote) from err
    except hub.network_errors as err:
        where = hub_endpoint() if on_hub else urlsplit(url).netloc
        raise OfflineError(
            f"cannot reach {where} to download {name} ({type(err).__name__})",
            hint="check your network connection; HF_HUB_OFFLINE=1 uses only models already downloaded",
        ) from err

    total = meta.size
    hub_sha = meta.etag if meta.etag and SHA256_RE.match(meta.etag) else None
    expected_sha = remote.sha256 or hub_sha
    if remote.sha256 and hub_sha and remote.sha256 != hub_sha:
        # A catalog entry pins a checksum; the hub serving other content means the file changed
        # upstream, and downloading gigabytes only to reject them helps nobody.
        raise DownloadError(
            f"checksum mismatch for {name}: the hub now serves a different file than the catalog expects",
            hint="update llamaedge for a refreshed catalog, or pull it as hf:REPO/FILE to accept the new file",
        )

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = partial_path(dest)
    version = meta.etag or ""
    resume_bytes = partial_bytes(dest)
    if resume_bytes and (
        _load_partial_meta(dest).get("etag") != version or (total is not None and resume_bytes > total)
    ):
        log.info("discarding a partial download of %s: the remote file changed", name)
        remove_partial(dest)
        resume_bytes = 0
    _partial_meta_path(dest).write_text(json.dumps({"etag": version, "url": url}))
    if total is not None:
        _check_disk(dest.parent, total - resume_bytes, name)

    sink(ProgressEvent(name, "downloading", resume_bytes, total))
    location = meta.location or url
    try:
        with open(part, "ab") as f:
            writer = _ProgressWriter(f, name, resume_bytes, total, sink, cancel)
            hub.http_get(location, writer, resume_size=resume_bytes, headers=headers, expected_size=total)
    except KeyboardInterrupt as err:
        raise DownloadError(
            f"download of {name} interrupted; {human_bytes(partial_bytes(dest))} kept in {part.name}",
            hint="run the same command again to resume",
        ) from err
    except hub.errors.HfHubHTTPError as err:
        raise _translate_http_error(err, remote) from err
    except hub.network_errors as err:
        raise DownloadError(
            f"connection lost while downloading {name}; {human_bytes(partial_bytes(dest))} kept",
            hint="check your network connection and run the same command again to resume",
        ) from err
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise DownloadError(
                f"the disk filled up while downloading {name}; {human_bytes(partial_bytes(dest))} kept",
                hint="free some space (or use --models-dir on a bigger disk) and run again to resume",
            ) from err
        if "Consistency check failed" in str(err):
            remove_partial(dest)
            raise DownloadError(
                f"{name} arrived with the wrong size; the partial file was removed",
                hint="run the same command again",
            ) from err
        raise DownloadError(f"cannot write {part}: {err.strerror or err}", hint="check the folder's permissions") from err

    size = partial_bytes(dest)
    if expected_sha:
        sink(ProgressEvent(name, "verifying", size, size))
        actual_sha = sha256_of(part)
        if actual_sha != expected_sha:
            remove_partial(dest)
            raise DownloadError(
                f"checksum mismatch for {name}: expected sha256 {expected_sha[:12]}…, got {actual_sha[:12]}…; "
                "the file was removed",
                hint="run the command again; if it fails again the file on the server is damaged",
            )
    os.replace(part, dest)
    _partial_meta_path(dest).unlink(missing_ok=True)
    sink(ProgressEvent(name, "done", size, size))
    log.info("downloaded %s to %s", name, dest)
    return dest
