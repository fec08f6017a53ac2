"""Media files kept content-addressed under ROOT/media/<sha256><suffix>.

Grid and phased jobs refer to their media by hash, so they do not depend on the user's
file staying where it was, the same video used by two jobs is stored (and uploaded) once,
and the hash is the key of the upload cache and of the transcript cache. A copy, not a hard link: a
tool that rewrites the user's file in place must not change what the hash names. It is
written to a temporary name and renamed (atomic), so a crash never leaves half a file.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from workbench.media import sha256_file


def media_dir(root: Path) -> Path:
    d = root / "media"
    d.mkdir(parents=True, exist_ok=True)
    return d


def store_media(root: Path, src: str | os.PathLike[str]) -> tuple[str, Path]:
    """(sha256, stored path) of `src`, stored once under ROOT/media/."""
    src = Path(src)
    digest = sha256_file(src)
    dest = media_dir(root) / f"{digest}{src.suffix.lower()}"
    if dest.exists() and dest.stat().st_size == src.stat().st_size:
        return digest, dest
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
    return digest, dest
