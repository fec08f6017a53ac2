"""Batch requests on Ray Data: `replicas` actors that each hold one `vllm.LLM`.

The worker is the Ray driver and stays the only writer of the store (DESIGN "Scale"):
`chat()` spools the pending requests it is handed (the runner already skipped the
custom_ids written before) to a local file, streams them into a Ray Dataset through
`SpoolSource`, runs `map_batches(Replica, concurrency=replicas)` and yields each result
as it reaches the driver, so the runner records it through the same exactly-once path as
the in-process engine. Results arrive in completion order, tagged with their custom_id.

Failure semantics, measured in /tmp/ray-lab (q2-q5, q9):
- a bad request is its own error result inside the replica (`ray_replica.Replica`);
- a replica process that dies is restarted by Ray and its unfinished task retried; the
  retried task may hand back results the driver already has, which `chat()` drops by
  custom_id, so no result is written twice;
- cancel (`stop()` true) closes the dataset's iterator, which ends the actors in ~0.1 s,
  then shuts the local Ray runtime down: no actor and no engine process is left;
- a driver killed with -9 takes its local Ray runtime with it (raylet, GCS and replicas
  gone within ~60 s); the next worker resumes from the files.

The Ray runtime lives for one `chat()` call: a local `ray.init` sized to this machine, or
`WORKBENCH_RAY_ADDRESS` to join a running cluster (`ray start --head`), never both.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from workbench.device import has_gpu
from workbench.engines.base import ChatRequest, ChatResult
from workbench.engines.ray_cluster import RayRuntime

log = logging.getLogger("workbench.ray")


class RaySettings(BaseModel):
    """How the job spreads over Ray; every other engine key is a vLLM setting per replica."""

    model_config = ConfigDict(extra="forbid")

    replicas: int = Field(1, ge=1)
    #: CPUs Ray reserves per replica (on a GPU machine the engine mostly waits on the GPU)
    num_cpus: float = Field(1.0, gt=0)
    #: GPUs per replica: None = one if this machine has a GPU, else none
    num_gpus: float | None = Field(None, ge=0)
    #: requests per Ray task; each replica's vLLM keeps a whole task in flight
    batch_size: int = Field(256, ge=1)
    #: append each custom_id a replica receives to this file (pid + id per line)
    received_log: str | None = None


RAY_KEYS = frozenset(RaySettings.model_fields)


class RayDataEngine:
    """ChatEngine that runs `chat()` on a Ray Dataset of vLLM replicas."""

    name = "ray"

    def __init__(self, model: str, **spec: Any) -> None:
        from workbench.engines.vllm_args import VLLMSettings

        self.ray = RaySettings(**{k: v for k, v in spec.items() if k in RAY_KEYS})
        rest = {k: v for k, v in spec.items() if k not in RAY_KEYS and k != "model_name"}
        # unset settings stay None: each replica's device decides them (engines.vllm_args)
        self.vllm = VLLMSettings(model=model, **rest)
        self.runtime = RayRuntime()
        self._iter: Any = None
        #: what the last run sent and received (for the job's metrics and the bench)
        self.stats: dict[str, Any] = {}

    def load(self) -> None:
        """Nothing resident between jobs: the runtime and replicas live for one chat()."""
        import ray.data  # noqa: F401  (fail at load, with the extra's name, if missing)

    def unload(self) -> dict[str, Any]:
        self._close()
        return {}

    def chat(self, requests: Iterable[ChatRequest], window: int = 5000, mode: str = "window",
             stop: Callable[[], bool] | None = None) -> Iterator[ChatResult]:
        """Yield one result per request (each custom_id once), in completion order."""
        stop = stop or (lambda: False)
        spool_dir = _new_spool_dir()
        path = os.path.join(spool_dir, "pending.jsonl")
        spans = _spool(requests, path)
        self.stats = {"sent": len(spans), "received": 0, "duplicates_dropped": 0}
        if not len(spans) or stop():
            _remove(spool_dir)
            return
        seen: set[str] = set()
        try:
            ds = self._dataset(path, spans, window)
            self._iter = iter(ds.iter_batches(batch_size=None, batch_format="numpy",
                                              prefetch_batches=0))
            t0 = time.monotonic()
            for batch in self._iter:
                for cid, raw in zip(batch["custom_id"], batch["result"], strict=True):
                    cid = str(cid)
                    if cid in seen:  # a retried task answered it again
                        self.stats["duplicates_dropped"] += 1
                        continue
                    seen.add(cid)
                    self.stats["received"] += 1
                    self.stats.setdefault("first_result_s", round(time.monotonic() - t0, 3))
                    yield ChatResult.model_validate_json(str(raw))
                if stop():
                    break
            self.stats["wall_s"] = round(time.monotonic() - t0, 3)
        finally:
            self._close()
            _remove(spool_dir)

    def abort(self, ids: Iterable[str] | None = None) -> list[str]:
        """Stop the dataset and release every replica (partial results are already out)."""
        self._close()
        return []

    # -- internals -----------------------------------------------------------------------
    def _dataset(self, path: str, spans: np.ndarray, window: int) -> Any:
        from workbench.engines.ray_replica import Replica, SpoolSource

        ray = self.runtime.start()
        r = self.ray
        gpus = r.num_gpus if r.num_gpus is not None else (1.0 if has_gpu() else 0.0)
        ds = ray.data.read_datasource(SpoolSource(path, spans), num_cpus=0, concurrency=1)
        kw: dict[str, Any] = {"num_gpus": gpus} if gpus else {}
        return ds.map_batches(
            Replica, compute=ray.data.ActorPoolStrategy(size=r.replicas), num_cpus=r.num_cpus, batch_size=r.batch_size,
            fn_constructor_kwargs={"settings": self.vllm.model_dump(), "window": window,
                                   "received_log": r.received_log}, **kw)

    def _close(self) -> None:
        it, self._iter = self._iter, None
        if it is not None:
            try:  # GeneratorExit into Ray Data's executor: it ends the actors
                it.close()
            except Exception:
                log.debug("closing the dataset iterator failed", exc_info=True)
        self.runtime.stop()


def check_spec(spec: dict[str, Any]) -> None:
    """Refuse at submit a misspelt or mistyped Ray or vLLM key (the worker would fail the
    whole job on it later), naming the key and why."""
    from pydantic import ValidationError

    from workbench.errors import InvalidInput

    kw = {k: v for k, v in spec.items() if k not in ("provider", "model_name")}
    try:
        RayDataEngine(**kw)
    except ValidationError as e:
        raise InvalidInput([(None, "engine." + ".".join(map(str, x["loc"])), _why(x))
                            for x in e.errors()], source="engine settings") from None


def _why(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return (f"not a setting of the Ray engine ({', '.join(sorted(RAY_KEYS))}) nor of"
                " vLLM's engine")
    return str(err["msg"]).lower()


def _new_spool_dir() -> str:
    """A fresh spool folder; those of drivers that died (kill -9 skips cleanup) go first."""
    import psutil

    root = os.path.join(tempfile.gettempdir(), "wb-ray-spool")
    os.makedirs(root, exist_ok=True)
    for name in os.listdir(root):
        pid = name.split("-", 1)[0]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            _remove(os.path.join(root, name))
    return tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=root)


def _spool(requests: Iterable[ChatRequest], path: str) -> np.ndarray:
    """Write the requests one JSON per line; return (offset, length) of each line."""
    spans: list[tuple[int, int]] = []
    off = 0
    with open(path, "wb") as f:
        for req in requests:
            line = req.model_dump_json().encode() + b"\n"
            f.write(line)
            spans.append((off, len(line)))
            off += len(line)
    return np.array(spans, dtype=np.int64).reshape(-1, 2)


def _remove(d: str) -> None:
    import shutil

    shutil.rmtree(d, ignore_errors=True)
