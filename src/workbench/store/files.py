"""Append-only JSONL result files: the checkpoint behind invariant 1 (exactly once).

A record is written as one line and flushed to the OS before the caller moves any
counter, so a `kill -9` can lose at most a torn last line, which `repair()` cuts off on
resume. Flushed data survives the death of the process (it is in the page cache); an
fsync every `fsync_every` lines bounds what a power cut could take.

A full disk tears nothing: lines are buffered here (not in a BufferedWriter, which keeps
what it could not write and raises again at close: measured, that killed the worker) and
a write that fails with ENOSPC cuts the file back to its last complete line and drops the
unwritten lines. They were never counted, so a resume sends them again.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from workbench.store.jsonl import dumps_line, loads

#: write buffer of an appending log (lines reach the OS at flush(), not every 8 KiB)
WRITE_BUFFER = 1 << 16


class ResultLog:
    """One append-only JSONL file of result records, each carrying a `custom_id`."""

    def __init__(self, path: str | os.PathLike[str], fsync_every: int = 1000) -> None:
        self.path = Path(path)
        self.fsync_every = fsync_every
        self._fh: Any = None
        self._buf = bytearray()
        #: bytes of complete lines in the file (where a failed write is cut back to)
        self._size = 0
        self._since_sync = 0
        #: flush every line (default); the batch runner batches flushes (JobContext.flush)
        self.autoflush = True

    def repair(self) -> int:
        """Cut a torn or unparsable last line; returns the number of bytes removed."""
        if not self.path.exists():
            return 0
        size = self.path.stat().st_size
        if size == 0:
            return 0
        with open(self.path, "rb+") as f:
            # find the start of the last line
            pos, chunk = size, 1 << 16
            tail = b""
            while pos > 0:
                step = min(chunk, pos)
                pos -= step
                f.seek(pos)
                tail = f.read(step) + tail
                body = tail[:-1] if tail.endswith(b"\n") else tail
                if b"\n" in body:
                    break
            body = tail[:-1] if tail.endswith(b"\n") else tail
            nl = body.rfind(b"\n")
            last_start = pos + nl + 1 if nl >= 0 else pos
            f.seek(last_start)
            last = f.read()
            keep = last_start
            if last.endswith(b"\n"):
                try:
                    loads(last)
                    keep = size
                except ValueError:
                    pass
            if keep < size:
                f.truncate(keep)
            return size - keep

    def records(self) -> Iterator[dict[str, Any]]:
        """Stream the complete records (a torn last line is skipped, not an error)."""
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    return
                try:
                    yield loads(line)
                except ValueError:
                    continue

    def ids(self) -> set[str]:
        return {str(r.get("custom_id")) for r in self.records()}

    def count(self) -> int:
        return sum(1 for _ in self.records())

    def supersede(self, drop: Callable[[dict[str, Any]], bool], audit: str | os.PathLike[str]) -> int:
        """Move the records `drop` selects out of this file into `audit`; returns how many.

        For re-sending failed requests while keeping one line per custom_id: the moved
        lines are appended to the audit file and fsynced first, then the kept lines are
        written to a temporary file that atomically replaces this one (write + rename). A
        reader sees the old file or the new one, never a half; a crash between the two
        steps leaves a line in both files (the audit may repeat it, the results do not).
        Call only while nothing appends to this file (the runner, before it starts).
        """
        if self._fh is not None:
            raise RuntimeError(f"{self.path} is open for appending; supersede before writing")
        if not self.path.exists() or not any(drop(r) for r in self.records()):
            return 0
        tmp = self.path.with_name(self.path.name + ".tmp")
        moved = 0
        with open(self.path, "rb") as src, open(tmp, "wb") as keep, open(audit, "ab") as out:
            for line in src:
                if not line.endswith(b"\n"):
                    break  # a torn last line is dropped, as repair() would
                try:
                    rec = loads(line)
                except ValueError:
                    keep.write(line)
                    continue
                if drop(rec):
                    out.write(line)
                    moved += 1
                else:
                    keep.write(line)
            out.flush()
            os.fsync(out.fileno())
            keep.flush()
            os.fsync(keep.fileno())
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)
        return moved

    def append(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            self._fh = open(self.path, "ab", buffering=0)
            self._size = self._fh.seek(0, os.SEEK_END)
        self._buf += dumps_line(record)
        self._since_sync += 1
        if self.autoflush or len(self._buf) >= WRITE_BUFFER:
            self.flush()

    def flush(self) -> None:
        """Hand buffered lines to the OS (they survive a kill -9); fsync now and then.

        On a write error (a full disk) the file is cut back to its last complete line,
        the unwritten lines are dropped, and the error is raised.
        """
        if self._fh is None:
            return
        if self._buf:
            n = len(self._buf)
            try:
                with memoryview(self._buf) as view:
                    done = 0
                    while done < n:
                        done += self._fh.write(view[done:]) or 0
            except OSError:
                self._buf.clear()
                self._cut_back()
                raise
            self._buf.clear()
            self._size += n
        if self._since_sync >= self.fsync_every:
            os.fsync(self._fh.fileno())
            self._since_sync = 0

    def _cut_back(self) -> None:
        try:
            os.ftruncate(self._fh.fileno(), self._size)
        except OSError:  # repair() cuts a torn line on resume all the same
            pass

    def close(self) -> None:
        """Flush, fsync and close. Lines a full disk would not take are dropped (the
        caller has heard of it from `flush`); other errors are raised."""
        if self._fh is None:
            return
        try:
            self.flush()
            os.fsync(self._fh.fileno())
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
        finally:
            self._buf.clear()
            self._fh.close()
            self._fh = None


def _fsync_dir(path: Path) -> None:
    """Make a rename durable (the directory entry), where the OS allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
