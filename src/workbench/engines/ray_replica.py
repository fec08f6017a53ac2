"""What runs on the Ray side of a batch job: the pending-request source and the replicas.

`SpoolSource` is a Ray Data datasource over a spool file the driver writes (one
`ChatRequest` JSON per line). The driver keeps only an (offset, length) pair per line, so
a 170,000-line job costs ~3 MB at the driver instead of the ~100 MB per 40,000 lines that
`from_items` held (/tmp/ray-lab q1_input: 15.8 s vs 12.3 s for 40,000 lines, 274 vs 386
MB driver RSS). Reads run on the driver's node only: the spool is not on a shared disk.

`Replica` is the `map_batches` actor class: one in-process `VLLMEngine` per actor, built
once, so every replica renders prompts and validates lengths exactly as the in-process
engine does (same greedy outputs token for token). Each request that cannot run (too
long, bad parameters, a broken body) becomes that request's error result; the engine
never sees the batch as a whole, so one bad row cannot fail the dataset (Ray Data LLM
fails the whole dataset: ray-project/ray#59194). `__call__` is a generator that yields
a chunk of results at least every `flush_s`, so results stream to the driver while a
batch is still running (cancel and progress do not wait for the whole batch).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import ray.data
from ray.data.block import BlockMetadata
from ray.data.datasource import ReadTask

from workbench.engines.base import ChatRequest, ChatResult


class SpoolSource(ray.data.Datasource):
    """The lines of a spool file, `lines_per_task` per read task, read on the driver's node."""

    def __init__(self, path: str, spans: np.ndarray, lines_per_task: int = 1000) -> None:
        super().__init__()
        self.path = path
        self.spans = spans
        self.per = lines_per_task

    @property
    def supports_distributed_reads(self) -> bool:
        return False  # the spool lives on the driver's disk only

    def estimate_inmemory_data_size(self) -> int:
        return int(self.spans[:, 1].sum()) if len(self.spans) else 0

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context: Any = None) -> list[ReadTask]:
        tasks = []
        for start in range(0, len(self.spans), self.per):
            chunk = self.spans[start:start + self.per]
            meta = BlockMetadata(num_rows=len(chunk), size_bytes=int(chunk[:, 1].sum()),
                                 input_files=None, exec_stats=None)
            tasks.append(ReadTask(lambda c=chunk, p=self.path: _read(p, c), meta,
                                  per_task_row_limit=per_task_row_limit))
        return tasks


def _read(path: str, chunk: np.ndarray) -> Iterator[Any]:
    import pyarrow as pa

    ids, bodies = [], []
    with open(path, "rb") as f:
        for off, n in chunk:
            f.seek(int(off))
            line = f.read(int(n)).decode()
            ids.append(json.loads(line)["custom_id"])
            bodies.append(line)
    yield pa.table({"custom_id": ids, "request": bodies})


class Replica:
    """One `vllm.LLM` per Ray actor; `__call__(batch)` yields result rows as they finish.

    `received_log`: append every custom_id this replica is handed to that file (with the
    replica's pid) — an audit of what was sent where, which the crash tests count.
    """

    def __init__(self, settings: dict[str, Any], window: int = 5000, flush_s: float = 0.5,
                 flush_rows: int = 64, received_log: str | None = None) -> None:
        from workbench.engines.vllm import VLLMEngine
        from workbench.engines.vllm_embed import VLLMEmbedEngine

        # /v1/embeddings lines come with runner="pooling" (batch.routing)
        cls = VLLMEmbedEngine if settings.get("runner") == "pooling" else VLLMEngine
        self.engine = cls(**settings)
        self.engine.load()
        self.window = window
        self.flush_s = flush_s
        self.flush_rows = flush_rows
        self.received_log = received_log
        self.pid = os.getpid()

    def __call__(self, batch: dict[str, Any]) -> Iterator[dict[str, Any]]:
        ids = [str(x) for x in batch["custom_id"]]
        if self.received_log:
            with open(self.received_log, "a") as f:
                f.write("".join(f"{self.pid} {i}\n" for i in ids))
        buf: list[ChatResult] = []
        last = time.monotonic()
        for res in self._results(ids, [str(x) for x in batch["request"]]):
            buf.append(res)
            if len(buf) >= self.flush_rows or time.monotonic() - last >= self.flush_s:
                yield self._rows(buf)
                buf, last = [], time.monotonic()
        if buf:
            yield self._rows(buf)

    def _results(self, ids: list[str], lines: list[str]) -> Iterator[ChatResult]:
        reqs: list[ChatRequest] = []
        for cid, line in zip(ids, lines, strict=True):
            try:  # a request that does not even parse is its own error, not the batch's
                reqs.append(ChatRequest.model_validate_json(line))
            except ValueError as e:
                yield ChatResult(custom_id=cid, error=f"invalid request: {_first_line(e)}",
                                 error_code="invalid_request")
        pending = {r.custom_id for r in reqs}
        try:
            for res in self.engine.chat(reqs, window=self.window):
                pending.discard(res.custom_id)
                yield res
        except Exception as e:  # the engine itself broke: the rest of this batch fails alone
            self.engine.abort()
            for cid in sorted(pending):
                yield ChatResult(custom_id=cid, error=f"engine error: {_first_line(e)}",
                                 error_code="engine_error")

    def _rows(self, results: list[ChatResult]) -> dict[str, Any]:
        return {"custom_id": np.array([r.custom_id for r in results], dtype=object),
                "result": np.array([r.model_dump_json() for r in results], dtype=object),
                "pid": np.full(len(results), self.pid)}


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
