"""Intake: which files a submission names, and which of them can be transcribed.

The line between refusing and failing alone: a submission that names nothing usable (a
missing path, an empty list, an item id used twice) is refused whole and nothing is
queued — the user has to fix the call. A file that exists but cannot be read as audio
(a corrupt upload, a video without sound) is one student's problem: its item is created
already `failed`, with the reason, and the rest of the class goes on.

Folders are read by extension, case-insensitively; files with other extensions are
skipped and reported by name (hidden files are ignored).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import InvalidInput
from workbench.store import Store
from workbench.store.media import store_media

#: Extensions picked up when a folder is submitted: audio and video containers PyAV reads.
MEDIA_EXTENSIONS = frozenset({
    # audio
    ".wav", ".wave", ".mp3", ".m4a", ".m4b", ".aac", ".flac", ".ogg", ".oga", ".opus", ".wma",
    ".aiff", ".aif", ".aifc", ".amr", ".ac3", ".caf", ".au", ".snd", ".spx", ".mka", ".wv",
    ".ape", ".mp2", ".tta", ".w64", ".voc", ".dts",
    # video (their audio track is transcribed)
    ".webm", ".mp4", ".m4v", ".mov", ".qt", ".mkv", ".avi", ".mpg", ".mpeg", ".3gp", ".3g2",
    ".flv", ".f4v", ".wmv", ".asf", ".ts", ".mts", ".m2ts", ".ogv", ".vob", ".mxf", ".dv"})

Files = str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | Mapping[str, str | os.PathLike[str]]


@dataclass
class Entry:
    """One named file: the id the user gave (or None), the path, and how to name it in messages."""

    given: str | None
    path: Path
    label: str


@dataclass
class Intake:
    """What a submission brings: items to create (some already failed) and skipped files."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r.get("error")]

    def summary(self) -> str:
        """One line for the job message and the warning: who failed at intake, what was skipped."""
        parts = []
        if self.failures:
            parts.append(f"{len(self.failures)} of {len(self.rows)} recordings failed at intake: "
                         + "; ".join(f"{r['label']}: {r['error']}" for r in self.failures[:5])
                         + (f"; and {len(self.failures) - 5} more" if len(self.failures) > 5 else ""))
        if self.skipped:
            names = ", ".join(self.skipped[:8]) + (f" and {len(self.skipped) - 8} more"
                                                   if len(self.skipped) > 8 else "")
            parts.append(f"skipped {len(self.skipped)} file{'s' if len(self.skipped) != 1 else ''}"
                         f" that are not audio or video (by extension): {names}")
        return "; ".join(parts)


def collect(files: Files) -> tuple[list[Entry], list[str]]:
    """(entries in arrival order, names of skipped files); folders by modification time."""
    if isinstance(files, Mapping):
        return [Entry(str(k), Path(v), f"{k} ({Path(v).name})") for k, v in files.items()], []
    if isinstance(files, str | os.PathLike):
        p = Path(files).expanduser()
        if p.is_dir():
            found, skipped = [], []
            for x in sorted(p.iterdir(), key=lambda x: x.name):
                if not x.is_file() or x.name.startswith("."):
                    continue
                (found if x.suffix.lower() in MEDIA_EXTENSIONS else skipped).append(x)
            found.sort(key=lambda x: (x.stat().st_mtime, x.name))
            return [Entry(None, x, x.name) for x in found], [x.name for x in skipped]
        return [Entry(None, p, p.name)], []
    out = []
    for n, f in enumerate(files, start=1):
        p = Path(f).expanduser()
        out.append(Entry(None, p, f"file {n} ({p.name})"))
    return out, []


def _unique_id(stem: str, taken: set[str]) -> str:
    base = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem) or "item"
    cand, n = base, 2
    while cand in taken:
        cand, n = f"{base}-{n}", n + 1
    return cand


def _nothing_found(files: Files, skipped: list[str]) -> str:
    if isinstance(files, str | os.PathLike) and Path(files).expanduser().is_dir():
        why = f"no audio or video files found in the folder {Path(files)}"
        if skipped:
            why += (f" ({len(skipped)} other file{'s' if len(skipped) != 1 else ''} skipped by"
                    f" extension: {', '.join(skipped[:5])})")
        return why
    return "no recordings given (the list is empty)"


def prepare_items(store: Store, files: Files, taken: set[str] | None = None) -> Intake:
    """Check every file and store it content-addressed under ROOT/media/.

    Refused whole (InvalidInput naming each entry) when nothing is given, a path does not
    exist or is a folder inside a list, or an id is used twice. An unreadable file, or one
    without an audio track, becomes a row with `error` (its item fails alone, at once).
    """
    from workbench.engines.whisper import MediaError, NoAudioTrack, probe_audio

    entries, skipped = collect(files)
    if not entries:
        raise InvalidInput([(None, "files", _nothing_found(files, skipped))], source="recordings")
    taken = set(taken or ())
    problems: list[tuple[str, str, str]] = []
    intake = Intake(skipped=skipped)
    for e in entries:
        if not e.path.exists():
            problems.append((e.label, "", f"no such file: {e.path}"))
            continue
        if e.path.is_dir():
            problems.append((e.label, "", f"{e.path} is a folder: submit a folder on its own,"
                             " or list its files"))
            continue
        if e.given is not None and e.given in taken:
            problems.append((e.label, "item id", f"{e.given!r} is used twice"))
            continue
        error = code = None
        audio_s: float | None = None
        try:
            audio_s = probe_audio(e.path)
        except NoAudioTrack as x:
            error, code = str(x).replace(f"{e.path}: ", ""), "no_audio_track"
        except MediaError as x:
            error, code = str(x).replace(f"{e.path}: ", ""), "unreadable_media"
        item_id = e.given if e.given is not None else _unique_id(e.path.stem, taken)
        taken.add(item_id)
        intake.rows.append({"item_id": item_id, "name": e.path.name, "label": e.label,
                            "src": e.path, "audio_s": audio_s, "error": error,
                            "error_code": code})
    if problems:
        raise InvalidInput(problems, source="recordings")
    for r in intake.rows:
        digest, dest = store_media(store.root, r.pop("src"))
        r.update(path=str(dest), sha256=digest, size=dest.stat().st_size)
    return intake
