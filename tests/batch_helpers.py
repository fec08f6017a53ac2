"""Helpers shared by the batch tests: request files and the direct-`LLM.chat` reference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WORDS = ("data engineer python spark sql kernels rubric answer clarity structure score "
         "candidate profile experience team lead cloud").split()


def request_lines(n: int, prefix: str = "r", max_tokens: int | None = None) -> list[dict[str, Any]]:
    """n chat requests of varied prompt and output lengths (greedy, so deterministic)."""
    lines = []
    for i in range(n):
        words = " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(3 + i % 11))
        lines.append({"custom_id": f"{prefix}{i}", "method": "POST", "url": "/v1/chat/completions",
                      "body": {"messages": [{"role": "user", "content": f"Candidate {i}: {words}"}],
                               "max_tokens": max_tokens or 4 + (i * 5) % 21, "temperature": 0}})
    return lines


def write_jsonl(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def run_to_end(wb: Any, job: Any, timeout: float = 600) -> None:
    """A worker thread on `wb` until `job` ends (or `timeout`), stopped either way."""
    wb.start_worker()
    try:
        job.wait(timeout=timeout, progress=False)
    finally:
        wb.stop_workers()


def records(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of an output or errors file (none if it was never written). Read
    while a worker writes (or just after a kill -9), the last line may be torn: it is
    left out; a torn line anywhere else fails the read."""
    lines = path.read_text().splitlines() if path.exists() else []
    out = [json.loads(x) for x in lines[:-1]]
    try:
        out += [json.loads(x) for x in lines[-1:]]
    except json.JSONDecodeError:
        pass
    return out


def direct_outputs(engine: Any, lines: list[dict[str, Any]]) -> dict[str, str]:
    """What `LLM.chat` returns for the same requests in one call: the reference."""
    convs = [x["body"]["messages"] for x in lines]
    sps = [engine.sampling_params({k: v for k, v in x["body"].items() if k != "messages"}, 0)
           for x in lines]
    outs = engine.llm.chat(convs, sps, use_tqdm=False)
    return {x["custom_id"]: o.outputs[0].text for x, o in zip(lines, outs, strict=True)}
