"""Media facts: what type a file is, and its content hash.

A base module because three layers ask: the Gemini engine (upload's mime type), the
store (media are kept under their hash) and the kinds and widgets (which files a model
can take). None of them has to import another's module for it.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
from pathlib import Path

#: Video/audio/image types Gemini accepts that `mimetypes` may not know.
EXTRA_MIME = {".mkv": "video/x-matroska", ".flv": "video/x-flv", ".wmv": "video/wmv",
              ".3gp": "video/3gpp", ".webm": "video/webm", ".mpg": "video/mpg",
              ".m4a": "audio/mp4", ".opus": "audio/ogg", ".flac": "audio/flac"}
#: Mime type prefixes of the media a grid model can take.
MEDIA_PREFIXES = ("video/", "audio/", "image/", "text/")


def guess_mime_type(path: str | os.PathLike[str]) -> str | None:
    suffix = Path(path).suffix.lower()
    return EXTRA_MIME.get(suffix) or mimetypes.guess_type(str(path))[0]


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
