"""Gemini media files: uploaded once per content, reused until near expiry, ACTIVE before use.

A media file is identified by its content hash. The hash maps to an uploaded file name
in a `FileCache` (the grid keeps it in the store), so the same video is uploaded once and
reused across cells and re-runs until it nears its 48 h expiry. A cached name is
confirmed with `files.get` before use; a vanished file is uploaded again. Concurrent
users of one media share a single upload. A file is unusable while PROCESSING (400 "not
in an ACTIVE state"): `files.get` is polled with backoff; FAILED (or a timeout) raises
`MediaFailed` naming the media, so the caller can mark exactly the calls that needed it.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from workbench.engines.gemini_client import (
    GeminiClient,
    GeminiSettings,
    MissingApiKey,
    describe,
    error_code,
)
from workbench.engines.ratelimit import Stopped, sleep_or_stop
from workbench.errors import WorkbenchError
from workbench.media import guess_mime_type, sha256_file


class MediaFailed(WorkbenchError):
    """A media file could not be made usable (upload refused, processing FAILED, timeout)."""

    def __init__(self, media: str, reason: str) -> None:
        super().__init__(f"media {media}: {reason}")
        self.media, self.reason = media, reason


class GeminiFile(BaseModel):
    """An uploaded media file: its content hash and where the service keeps it."""

    sha256: str
    name: str
    uri: str
    mime_type: str
    size_bytes: int = 0
    expires_at: float | None = None
    state: str = "ACTIVE"


class FileCache(Protocol):
    """Where content hash → uploaded file lives between runs (the grid uses the store)."""

    def get(self, endpoint: str, sha256: str) -> GeminiFile | None: ...

    def put(self, endpoint: str, f: GeminiFile) -> None: ...

    def drop(self, endpoint: str, sha256: str) -> None: ...


class MemoryFileCache:
    """A FileCache for one process; enough for notebooks that do not use the store."""

    def __init__(self) -> None:
        self._files: dict[tuple[str, str], GeminiFile] = {}

    def get(self, endpoint: str, sha256: str) -> GeminiFile | None:
        return self._files.get((endpoint, sha256))

    def put(self, endpoint: str, f: GeminiFile) -> None:
        self._files[(endpoint, f.sha256)] = f

    def drop(self, endpoint: str, sha256: str) -> None:
        self._files.pop((endpoint, sha256), None)


class _FileGone(Exception):
    """A cached file name the service no longer knows (expired, deleted, other key)."""


class GeminiUploads(GeminiClient):
    """Upload once per content hash, wait until ACTIVE, share one upload between callers."""

    def __init__(self, settings: GeminiSettings | None = None, *,
                 file_cache: FileCache | None = None, **overrides: Any) -> None:
        super().__init__(settings, **overrides)
        self.file_cache: FileCache = file_cache if file_cache is not None else MemoryFileCache()
        self._uploads: dict[str, asyncio.Task[GeminiFile]] = {}

    async def aclose(self) -> None:
        for t in self._uploads.values():
            if not t.done():
                t.cancel()
        await super().aclose()

    async def upload(self, path: str | os.PathLike[str], *, mime_type: str | None = None,
                     sha256: str | None = None, display_name: str | None = None,
                     stop: asyncio.Event | None = None) -> GeminiFile:
        """The ACTIVE uploaded file for this content: cached, shared, or uploaded now."""
        digest = sha256 or await asyncio.to_thread(sha256_file, path)
        task = self._uploads.get(digest)
        if task is not None and self._expiring(task):  # a long run outlives a file's 48 h
            self.file_cache.drop(self.endpoint, digest)
            task = None
        # a failed upload stays failed for every caller (one clear error per media, no
        # re-upload storm); only a cancelled one is tried again
        if task is None or task.cancelled():
            task = asyncio.ensure_future(self._ensure_file(Path(path), digest, mime_type,
                                                           display_name, stop))
            self._uploads[digest] = task
        return await asyncio.shield(task)

    def _expiring(self, task: asyncio.Task[GeminiFile]) -> bool:
        """A finished upload whose file expires within the margin (reused within one run)."""
        if not task.done() or task.cancelled() or task.exception() is not None:
            return False
        f = task.result()
        return f.expires_at is not None and (
            f.expires_at - time.time() <= self.settings.expiry_margin_s)

    async def _ensure_file(self, path: Path, digest: str, mime_type: str | None,
                           display_name: str | None, stop: asyncio.Event | None) -> GeminiFile:
        label = display_name or path.name
        cached = self.file_cache.get(self.endpoint, digest)
        if cached is not None:
            fresh = cached.expires_at is None or (
                cached.expires_at - time.time() > self.settings.expiry_margin_s)
            if fresh:
                try:
                    f = await self._wait_active(cached, label, stop)
                    self.stats["reused_files"] += 1
                    return f
                except _FileGone:
                    pass
            self.file_cache.drop(self.endpoint, digest)
        mime = mime_type or guess_mime_type(path)
        if mime is None:
            raise MediaFailed(label, f"unknown mime type for {path.name}; pass mime_type")
        try:
            async for attempt in self._retrying(stop):
                with attempt:
                    uploaded = await self.client.aio.files.upload(
                        file=path, config={"mime_type": mime, "display_name": label})
        except (Stopped, MissingApiKey):
            raise
        except Exception as e:
            raise MediaFailed(label, f"upload failed: {describe(e)}") from e
        self.stats["uploads"] += 1
        f = self._from_sdk(uploaded, digest, mime)
        self.file_cache.put(self.endpoint, f)
        try:
            f = await self._wait_active(f, label, stop)
        except _FileGone as e:
            raise MediaFailed(label, "the uploaded file vanished while processing") from e
        self.file_cache.put(self.endpoint, f)
        return f

    @staticmethod
    def _from_sdk(sdk_file: Any, digest: str, mime: str | None) -> GeminiFile:
        exp = getattr(sdk_file, "expiration_time", None)
        state = getattr(sdk_file, "state", None)
        return GeminiFile(sha256=digest, name=sdk_file.name, uri=sdk_file.uri,
                          mime_type=sdk_file.mime_type or mime or "application/octet-stream",
                          size_bytes=int(sdk_file.size_bytes or 0),
                          expires_at=exp.timestamp() if exp is not None else None,
                          state=getattr(state, "name", str(state or "PROCESSING")))

    async def _wait_active(self, f: GeminiFile, label: str,
                           stop: asyncio.Event | None) -> GeminiFile:
        """Poll files.get with backoff until ACTIVE; FAILED/timeout → MediaFailed."""
        s = self.settings
        deadline = time.monotonic() + s.active_timeout_s
        delay = s.poll_initial_s
        while True:
            try:
                async for attempt in self._retrying(stop):
                    with attempt:
                        sdk_file = await self.client.aio.files.get(name=f.name)
            except (Stopped, MissingApiKey):
                raise
            except Exception as e:
                if error_code(e) in (403, 404):
                    raise _FileGone(f.name) from e
                raise MediaFailed(label, f"files.get {f.name} failed: {describe(e)}") from e
            cur = self._from_sdk(sdk_file, f.sha256, f.mime_type)
            if cur.state == "ACTIVE":
                return cur
            if cur.state == "FAILED":
                err = getattr(sdk_file, "error", None)
                why = getattr(err, "message", None) or "no reason given"
                self.file_cache.drop(self.endpoint, f.sha256)
                raise MediaFailed(label, f"processing FAILED on the service ({f.name}): {why}")
            if time.monotonic() + delay > deadline:
                raise MediaFailed(label, f"still {cur.state} after {s.active_timeout_s:.0f} s")
            await sleep_or_stop(delay, stop)
            delay = min(s.poll_max_s, delay * 1.5)
