"""Test doubles for phase and pipeline tests (never imported by src/).

- `ScriptedJudge`: a ChatEngine that answers evaluation requests with valid JSON for the
  schema it is given (scores derived from the transcript), logs every request it saw to a
  file (so tests count evaluations across processes), and can hold its first answer until
  a gate file exists (so a test can look at statuses while a batch is mid-phase).
- `Ballast`: an engine whose "model" is N MiB of real memory; `leak=True` keeps it alive
  after unload, like a library that never gives memory back.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from workbench.engines import pool
from workbench.engines.base import ChatRequest, ChatResult, Choice

_LEAKED: list[bytearray] = []


class ScriptedJudge:
    name = "scripted"

    def __init__(self, model: str = "scripted-judge", log: str | None = None,
                 gate: str | None = None, delay_s: float = 0.0, invalid_for: list[str] | None = None,
                 tokens: int = 40, load_s: float = 0.0) -> None:
        self.model = model
        self.log = Path(log) if log else None
        self.gate = Path(gate) if gate else None
        self.delay_s = delay_s
        self.invalid_for = set(invalid_for or ())
        self.tokens = tokens
        self.load_s = load_s
        self.loaded = False

    def load(self) -> None:
        time.sleep(self.load_s)
        self.loaded = True

    def _answer(self, req: ChatRequest) -> str:
        schema = req.params["response_format"]["json_schema"]["schema"]
        crit = schema["properties"]["scores"]["properties"]
        text = req.messages[-1]["content"] if req.messages else ""
        words = len(text.split('"""')[1].split()) if '"""' in text else 0
        scores = {k: min(v["maximum"], words % (v["maximum"] + 1)) for k, v in crit.items()}
        overall = min(schema["properties"]["overall"]["maximum"], words % 11)
        return json.dumps({"scores": scores, "overall": overall, "feedback": f"{words} words"})

    def chat(self, requests: Iterable[ChatRequest], window: int = 64) -> Iterator[ChatResult]:
        assert self.loaded, "chat before load"
        for k, req in enumerate(requests):
            if self.log is not None:
                with open(self.log, "a") as f:
                    f.write(json.dumps({"custom_id": req.custom_id, "pid": os.getpid()}) + "\n")
            if k == 0 and self.gate is not None:
                while not self.gate.exists():
                    time.sleep(0.02)
            if self.delay_s:
                time.sleep(self.delay_s)
            text = "not json" if req.custom_id in self.invalid_for else self._answer(req)
            yield ChatResult(custom_id=req.custom_id, choices=[Choice(text=text, finish_reason="stop")],
                             prompt_tokens=50, completion_tokens=self.tokens, model=self.model)

    def abort(self, ids: Iterable[str] | None = None) -> list[str]:
        return []

    def unload(self) -> dict[str, Any]:
        self.loaded = False
        return {}


class Ballast:
    """An engine that holds `mib` MiB of touched memory while loaded."""

    name = "ballast"

    def __init__(self, mib: int = 200, leak: bool = False, fail_on: str | None = None) -> None:
        self.mib, self.leak, self.fail_on = mib, leak, fail_on
        self.block: bytearray | None = None

    def load(self) -> None:
        self.block = bytearray(os.urandom(1 << 20) * self.mib)

    def echo(self, x: Any) -> Any:
        if self.fail_on is not None and x == self.fail_on:
            raise ValueError(f"cannot echo {x!r}")
        return x

    def count(self, n: int) -> Iterator[int]:
        yield from range(n)

    def whoami(self) -> int:
        return os.getpid()

    def unload(self) -> dict[str, Any]:
        if self.leak and self.block is not None:
            _LEAKED.append(self.block)
        self.block = None
        return {"freed_mib": 0 if self.leak else self.mib}


class SlowTranscriber:
    """An STT engine double: a fixed transcript after `delay_s`, each call logged with its pid."""

    name = "slow-stt"

    def __init__(self, model: str | None = None, delay_s: float = 0.3, log: str | None = None,
                 load_s: float = 0.0, texts: dict[str, str] | None = None, **_: Any) -> None:
        self.delay_s = delay_s
        self.texts = texts or {}  # sha256 of a file → what it "says"
        self.load_s = load_s
        self.log = Path(log) if log else None

    def load(self) -> None:
        time.sleep(self.load_s)

    def transcribe(self, path: str) -> Any:
        from workbench.engines.whisper import Transcript, probe_audio
        from workbench.media import sha256_file

        duration = probe_audio(path)
        said = self.texts.get(sha256_file(path), "water boils at a lower temperature up high")
        time.sleep(self.delay_s)
        if self.log is not None:
            with open(self.log, "a") as f:
                f.write(json.dumps({"path": str(path), "pid": os.getpid()}) + "\n")
        return Transcript(path=str(path), text=said,
                          segments=[], language="en", language_probability=1.0,
                          duration_s=duration, speech_s=duration, elapsed_s=self.delay_s, model="slow", batched=False)

    def unload(self) -> dict[str, Any]:
        return {}


class BaseModelDouble:
    """A 'base model' for scoring mechanics: completion requests get top log-probabilities.

    The distribution follows the answer being judged (the prompt's last answer line):
    phased (the teacher-dialogue prompt): "bike" → mostly " not"/" irrelevant",
    hesitations ("um") → leaning negative, anything else → mostly " correct"; grid
    ("Rating (1-10): "): an empty answer or one of mostly non-letters → "1", anything
    else → "8"/"9", and the follow-up prompt ending in "1" says whether that "1" was "10".
    Requests without `logprobs` get `feedback` as their text. Every request is logged
    (custom id, endpoint, logprobs asked) so tests count them.
    """

    name = "base-double"

    def __init__(self, model: str = "base-double", log: str | None = None,
                 feedback: str = "Clear and correct.", **_: Any) -> None:
        self.model = model
        self.log = Path(log) if log else None
        self.feedback = feedback

    def load(self) -> None:
        pass

    @staticmethod
    def _last_answer(prompt: str) -> str:
        lines = [x for x in prompt.splitlines()
                 if x.startswith(("Student's answer:", "Answer:", "A student said:"))]
        return lines[-1].split(":", 1)[1].strip().strip('"') if lines else ""

    @staticmethod
    def _junk(a: str) -> bool:
        chars = a.replace(" ", "")
        return a in ("", "(no answer)") or sum(ch.isalpha() for ch in chars) < 0.6 * len(chars)

    def _top(self, prompt: str) -> dict[str, float]:
        a = self._last_answer(prompt).lower()
        last = prompt.splitlines()[-1]
        if last.startswith("Rating (1-10):"):  # the grid judge's digits
            junk = self._junk(a)
            if last.endswith("1"):  # was that "1" the start of "10"?
                return {"\n\n": -0.1, "0": -3.0} if junk else {"0": -0.2, "\n\n": -1.8}
            if junk:
                return {"1": -0.2, "2": -1.6, "5": -3.5, " ": -4.0}
            return {"8": -0.6, "9": -1.2, "1": -2.0, "7": -1.6, " ": -4.0}
        if "bike" in a:
            return {" not": -0.4, " irrelevant": -1.2, " correct": -2.6, " a": -1.0}
        if " um" in f" {a}" or " uh" in f" {a}":
            return {" not": -0.9, " good": -1.5, " a": -0.6}
        return {" correct": -0.3, " right": -1.6, " wrong": -2.6, " a": -1.2}

    def chat(self, requests: Iterable[ChatRequest], window: int = 64,
             stop: Any = None) -> Iterator[ChatResult]:
        from workbench.engines.logprobs import TokenLogprob, TopLogprob

        for req in requests:
            asked = req.params.get("logprobs")
            if self.log is not None:
                with open(self.log, "a") as f:
                    f.write(json.dumps({"custom_id": req.custom_id, "endpoint": req.endpoint,
                                        "logprobs": asked}) + "\n")
            if not asked:
                yield ChatResult(custom_id=req.custom_id, model=self.model, prompt_tokens=100,
                                 completion_tokens=5,
                                 choices=[Choice(text=f" {self.feedback}", finish_reason="stop")])
                continue
            top = sorted(self._top(req.prompt or "").items(), key=lambda kv: -kv[1])
            steps = [TokenLogprob(token=top[0][0], logprob=top[0][1],
                                  top_logprobs=[TopLogprob(token=t, logprob=v) for t, v in top])]
            yield ChatResult(custom_id=req.custom_id, model=self.model, prompt_tokens=300,
                             completion_tokens=1,
                             choices=[Choice(text=top[0][0], finish_reason="length",
                                             logprobs=steps)])

    def abort(self, ids: Iterable[str] | None = None) -> list[str]:
        return []

    def unload(self) -> dict[str, Any]:
        return {}


pool.register_provider("base-double", BaseModelDouble)  # a grid model: engine={"provider": ...}
