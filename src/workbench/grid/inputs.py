"""A grid's inputs, checked before anything is queued: media, prompts, cells, warnings.

Every problem names its entry in words — "media 2 (clip.mp4)", "prompt 3", "pair 1" —
never a line number (a list has no lines). A single string where a list is expected is
one item: `prompts="Describe"` is one prompt, `media="a.mp4"` one media file, never a
list of characters.

Prompts get short text labels ("Summarise the clip…") that tables and reports show;
their ids ("p0", "p1") stay the keys. Some inputs are legal but probably not what was
meant (the same prompt twice, a judge that also competes): they pass with a warning.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from workbench.media import MEDIA_PREFIXES, guess_mime_type

Problem = tuple[str | None, str, str]
MediaInput = str | os.PathLike[str] | dict[str, Any]
#: longest prompt label (characters, before the ellipsis)
LABEL_CHARS = 28


def as_list(value: Any) -> list[Any]:
    """A list of items: a lone string, path, dict or model spec is one item, not many."""
    if value is None:
        return []
    if isinstance(value, str | os.PathLike | Mapping) or hasattr(value, "model_dump"):
        return [value]
    return list(value)


def short_label(text: str, taken: set[str], limit: int = LABEL_CHARS) -> str:
    """"Summarise the clip in one short sentence." → "Summarise the clip in one…" (unique)."""
    words = " ".join(str(text).split())
    label = words
    if len(words) > limit:
        cut = ""
        for w in words.split(" "):
            if len(cut) + len(w) + (1 if cut else 0) > limit:
                break
            cut = f"{cut} {w}" if cut else w
        label = (cut or words[:limit]).rstrip(" ,.;:") + "…"
    label = label or "prompt"
    cand, n = label, 2
    while cand in taken:
        cand, n = f"{label} ({n})", n + 1
    taken.add(cand)
    return cand


def _path_of(x: Any) -> str:
    return str(Path(x if not isinstance(x, dict) else x.get("path", "")).expanduser())


def media_entries(media: list[MediaInput], pairs: Sequence[tuple[Any, Any]] | None
                  ) -> tuple[list[dict[str, Any]], list[Problem]]:
    items: list[dict[str, Any]] = []
    problems: list[Problem] = []
    raw: list[Any] = list(media)
    if pairs:
        known = {_path_of(x) for x in raw}
        for m, _ in pairs:
            if not isinstance(m, int) and _path_of(m) not in known:
                raw.append(m)
                known.add(_path_of(m))
    for i, x in enumerate(raw):
        where = f"media {i + 1}"
        if isinstance(x, dict):
            if "path" not in x:
                problems.append((where, "", f"a dict needs 'path' (it has {sorted(x)})"))
                continue
            extra = set(x) - {"path", "mime_type", "name"}
            if extra:
                problems.append((where, "", f"unknown keys {sorted(extra)}"))
            p = Path(x["path"]).expanduser()
            items.append({"path": p, "name": x.get("name") or p.name, "where": f"{where} ({p.name})",
                          "mime_type": x.get("mime_type") or guess_mime_type(p)})
        elif isinstance(x, str | os.PathLike):
            p = Path(x).expanduser()
            items.append({"path": p, "name": p.name, "where": f"{where} ({p.name})",
                          "mime_type": guess_mime_type(p)})
        else:
            problems.append((where, "", f"a {type(x).__name__} is not a path or a dict"))
    if not raw:
        problems.append(("media", "", "no media given"))
    names = [it["name"] for it in items]
    for n in sorted({n for n in names if names.count(n) > 1}):
        problems.append((items[names.index(n)]["where"], "",
                         f"two media are named {n!r}: give one a distinct 'name'"))
    return items, problems


def prompt_entries(prompts: Any, pairs: Sequence[tuple[Any, Any]] | None
                   ) -> tuple[list[tuple[str, str]], list[Problem]]:
    """(label, text) per prompt: dict keys are labels; texts get short text labels."""
    problems: list[Problem] = []
    taken: set[str] = set()
    if isinstance(prompts, Mapping):
        items = [(str(k), v) for k, v in prompts.items()]
        taken = {k for k, _ in items}
    else:
        items = []
        for p in as_list(prompts):
            items.append((short_label(p, taken) if isinstance(p, str) else "prompt", p))
    if pairs:
        known = {n for n, _ in items} | {t for _, t in items}
        for _, p in pairs:
            if isinstance(p, str) and p not in known:
                items.append((short_label(p, taken), p))
                known.add(p)
    for i, (_, text) in enumerate(items):
        if not isinstance(text, str) or not text.strip():
            problems.append((f"prompt {i + 1}", "", "is empty or not text"))
    if not items:
        problems.append(("prompts", "", "no prompts given"))
    return items, problems


def cells(media: list[dict[str, Any]], prompts: list[tuple[str, str]],
          pairs: Sequence[tuple[Any, Any]] | None) -> tuple[list[tuple[int, int]], list[Problem]]:
    if not pairs:
        return [(mi, pi) for mi in range(len(media)) for pi in range(len(prompts))], []
    problems: list[Problem] = []
    out: list[tuple[int, int]] = []
    for i, (m, p) in enumerate(pairs):
        where = f"pair {i + 1}"
        mi = m if isinstance(m, int) else next(
            (j for j, it in enumerate(media) if str(it["path"]) == _path_of(m) or it["name"] == m),
            None)
        pi = p if isinstance(p, int) else next(
            (j for j, (n, t) in enumerate(prompts) if p in (n, t)), None)
        if mi is None or not 0 <= mi < len(media):
            problems.append((where, "", f"media {m} is not one of the media"))
            continue
        if pi is None or not 0 <= pi < len(prompts):
            problems.append((where, "", f"prompt {p!r} is not one of the prompts"))
            continue
        if (mi, pi) in out:
            problems.append((where, "", "this (media, prompt) pair appears twice"))
            continue
        out.append((mi, pi))
    return out, problems


def check_media(item: dict[str, Any], needs_media: bool, needs_audio: bool) -> list[Problem]:
    p: Path = item["path"]
    where = item["where"]
    if not p.is_file():
        return [(where, "", f"no such file: {p}")]
    problems: list[Problem] = []
    if p.stat().st_size == 0:
        problems.append((where, "", "the file is empty"))
    mime = item["mime_type"]
    if needs_media and mime is None:
        problems.append((where, "", "unknown media type; pass {'path': ..., 'mime_type':"
                         " 'video/mp4'}"))
    elif needs_media and not (mime.startswith(MEDIA_PREFIXES) or mime == "application/pdf"):
        problems.append((where, "", f"{mime} is not a video, audio, image, text or PDF type"
                         " that multimodal models take"))
    if needs_audio and not problems:
        from workbench.engines.whisper import MediaError, probe_audio

        try:
            probe_audio(p)
        except MediaError as e:
            problems.append((where, "", "text-only models need a transcript: "
                             + str(e).replace(f"{p}: ", "")))
    return problems


def warnings_for(prompts: list[tuple[str, str]], models: list[Any], judge: Any) -> list[str]:
    """Legal but suspicious: the same prompt twice, a judge that also answers."""
    out = []
    texts = [" ".join(str(t).split()).lower() for _, t in prompts]
    for t in dict.fromkeys(texts):
        labels = [prompts[i][0] for i, x in enumerate(texts) if x == t]
        if len(labels) > 1:
            out.append(f"the same prompt is given {len(labels)} times ({', '.join(labels)}):"
                       " its cells are run and judged twice")
    if judge is not None:
        for m in models:
            if (m.provider, m.name) == (judge.provider, judge.name):
                out.append(f"the judge {judge.label} is also a competitor ({m.label}): a model"
                           " judging its own answers tends to favour them")
                break
    return out
