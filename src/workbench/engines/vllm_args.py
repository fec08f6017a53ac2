"""The one place that decides vLLM's engine arguments and environment, per device.

Decided when the engine loads, on the machine that loads it (a Ray replica on a GPU node
decides for its GPU even if the driver has none), never at submit time:

- **CPU** (shared/RECIPES.md "vLLM on CPU"): float32, eager mode (torch.compile costs
  ~30 s here), the engine core in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`: ~2.5 s
  start instead of ~20 s), a KV cache sized explicitly (`VLLM_CPU_KVCACHE_SPACE=1` GiB,
  else vLLM reserves 92 % of RAM and fails) and the context capped at 4,096 tokens.
- **GPU**: vLLM's own defaults — CUDA graphs (no `enforce_eager`), the multiprocess engine
  core (scheduling overlaps the forward pass), `dtype="auto"` — with
  `gpu_memory_utilization`, `max_num_seqs`, `tensor_parallel_size`, `max_model_len` passed
  through from the job's `engine={...}` only when given (vLLM picks the rest).
- **Everywhere**: automatic prefix caching on, explicitly (`enable_prefix_caching=True`),
  so a shared rubric prompt is computed once; the user may turn it off.

A value the job gives always wins over the device default.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from workbench import device

#: context cap on CPU (RECIPES: long contexts only cost memory and time here)
CPU_MAX_MODEL_LEN = 4096
#: KV cache on CPU, GiB (VLLM_CPU_KVCACHE_SPACE; on CPU it wins over kv_cache_memory_bytes)
CPU_KVCACHE_GIB = 1

#: what each device gets when the job does not say (None: leave it to vLLM)
CPU_DEFAULTS: dict[str, Any] = {"dtype": "float32", "enforce_eager": True}
GPU_DEFAULTS: dict[str, Any] = {"dtype": "auto", "enforce_eager": False}

#: settings passed to vllm.LLM only when set (vLLM's own default otherwise)
PASS_THROUGH = ("runner", "max_model_len", "gpu_memory_utilization", "tensor_parallel_size",
                "max_num_seqs", "kv_cache_memory_bytes", "tokenizer")


class VLLMSettings(BaseModel):
    """Engine arguments taken from a job spec (`engine={...}`) or the environment."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str
    #: None: the device decides (engines/vllm_args.py: float32 + eager on CPU, vLLM's own
    #: defaults on a GPU); a value given here always wins
    dtype: str | None = None
    enforce_eager: bool | None = None
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    tensor_parallel_size: int | None = None
    kv_cache_memory_bytes: int | None = None
    max_num_seqs: int | None = None
    enable_prefix_caching: bool = True
    seed: int = 0
    structured_outputs: bool = True
    tokenizer: str | None = None
    #: "pooling" for an embedding model (set by the batch routing for `/v1/embeddings`
    #: lines); None: vLLM's default (generate)
    runner: str | None = None

    def key(self) -> str:
        return self.model_dump_json()


def on_gpu() -> bool:
    """Whether this process would load the engine on a CUDA device."""
    return device.has_gpu()


def context_len(model_path: str) -> int | None:
    """max_position_embeddings from a model folder's config.json (None for hub names)."""
    cfg = Path(model_path) / "config.json"
    if not cfg.is_file():
        return None
    c = json.loads(cfg.read_text())
    return c.get("text_config", c).get("max_position_embeddings")


def env_defaults(gpu: bool | None = None) -> dict[str, str]:
    """Process-wide settings vLLM reads from the environment (set before its import).

    Applied with `setdefault`: a variable already in the environment wins. On a GPU the
    multiprocess engine core stays vLLM's default (the variable is not set).
    """
    gpu = on_gpu() if gpu is None else gpu
    tmp = os.environ.get("WORKBENCH_VLLM_TMP") or os.path.join(tempfile.gettempdir(), "wb-vllm")
    os.makedirs(tmp, exist_ok=True)
    d = {
        # every start leaves ZMQ socket files: keep them in one folder of ours
        "VLLM_RPC_BASE_PATH": tmp,
        "VLLM_CACHE_ROOT": os.path.join(tmp, "cache"),
        "VLLM_CONFIGURE_LOGGING": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    if not gpu:
        d["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        d["VLLM_CPU_KVCACHE_SPACE"] = str(CPU_KVCACHE_GIB)
    return d


def apply_env(gpu: bool | None = None) -> None:
    for k, v in env_defaults(gpu).items():
        os.environ.setdefault(k, v)


def llm_kwargs(settings: dict[str, Any], model_path: str, gpu: bool | None = None) -> dict[str, Any]:
    """The keyword arguments for `vllm.LLM(...)` from a job's engine settings.

    `settings` holds what the job said (None: not said); the device fills the rest.
    """
    gpu = on_gpu() if gpu is None else gpu
    s = {k: v for k, v in settings.items() if v is not None}
    defaults = GPU_DEFAULTS if gpu else CPU_DEFAULTS
    kw: dict[str, Any] = {"model": model_path, "seed": s.get("seed", 0),
                          "enable_prefix_caching": s.get("enable_prefix_caching", True)}
    for k, v in defaults.items():
        kw[k] = s.get(k, v)
    for k in PASS_THROUGH:
        if k in s:
            kw[k] = s[k]
    # a pooling model's limit is its own (sentence-transformers' max_seq_length: 256 for
    # MiniLM, below max_position_embeddings): vLLM derives it; forcing ours is refused
    if not gpu and "max_model_len" not in kw and s.get("runner") != "pooling":
        n = context_len(model_path)
        kw["max_model_len"] = min(n, CPU_MAX_MODEL_LEN) if n else CPU_MAX_MODEL_LEN
    if s.get("runner") == "pooling":  # an encoder caches nothing: vLLM's KV coordinator
        kw["enable_prefix_caching"] = False  # asserts on prefix caching without a KV cache
    if s.get("structured_outputs", True) and s.get("runner") != "pooling":
        kw["structured_outputs_config"] = {"backend": "guidance", "disable_any_whitespace": True}
    return kw
