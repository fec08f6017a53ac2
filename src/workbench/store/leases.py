"""Who holds a job's lease, and whether that worker is still alive.

A worker names itself host:pid:nonce. Heartbeats are the rule (a lease goes stale when
they stop), but a holder on this host can be checked at once: a pid that no longer
exists, or a zombie, means the worker died and its job can be interrupted now.
"""

from __future__ import annotations

import os
import socket
import uuid


def worker_identity() -> str:
    """host:pid:nonce — lets a worker on the same host check if a lease holder is alive."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def on_this_host(worker: str | None) -> bool:
    """Whether the lease holder named itself with this machine's host name."""
    return bool(worker) and str(worker).split(":", 1)[0] == socket.gethostname()


def holder_is_dead(worker: str | None) -> bool:
    """True when the lease holder ran on this host and its process no longer exists."""
    if not worker:
        return True
    try:
        host, pid, _ = worker.split(":")
    except ValueError:
        return False
    if host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(int(pid))


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False
