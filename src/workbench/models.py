"""Which model a job uses, and the engine arguments that work for it on this machine.

`model=None` means `$WORKBENCH_MODEL`, else the embedded demo model (Gemma 3 270M,
prepared offline from PyPI packages on first use and cached under data/models/).
On a CPU-only machine the engine defaults follow shared/RECIPES.md: float32, eager
mode, a 1 GiB KV cache and a context capped at 4,096 tokens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from workbench.config import EMBEDDED_LLM, default_model, models_dir
from workbench.device import has_gpu

CPU_MAX_MODEL_LEN = 4096


def resolve(model: str) -> str:
    """A name vLLM can load: embedded names are prepared (once) and become folders."""
    if model == EMBEDDED_LLM:
        from workbench.demo_model import prepare_gemma

        return str(prepare_gemma(models_dir() / "gemma-3-270m"))
    return model


def _context_len(model_path: str) -> int | None:
    cfg = Path(model_path) / "config.json"
    if not cfg.exists():
        return None
    c = json.loads(cfg.read_text())
    c = c.get("text_config", c)
    return c.get("max_position_embeddings")


def engine_spec(model: str | None, engine: dict[str, Any] | None = None) -> dict[str, Any]:
    """The engine part of a job spec. Holds names and numbers only — never a secret."""
    engine = dict(engine or {})
    provider = engine.get("provider", "vllm")
    name = model or engine.get("model") or default_model()
    spec: dict[str, Any] = {"provider": provider, "model": name, "model_name": name}
    if provider in ("vllm", "ray"):  # a Ray replica loads the same vLLM engine
        spec.update(dtype="auto", enforce_eager=True)
        if not has_gpu():
            spec["dtype"] = "float32"
    spec.update({k: v for k, v in engine.items() if k != "provider"})
    spec["model"] = name
    if provider == "openai":  # refuse now what would fail every request later
        from workbench.engines.openai_http import check_spec

        check_spec(spec)
    return spec


def cpu_engine_args(model_path: str) -> dict[str, Any]:
    """Arguments added at load time on a CPU-only machine (context cap from config.json)."""
    if has_gpu():
        return {}
    n = _context_len(model_path)
    return {"max_model_len": min(n, CPU_MAX_MODEL_LEN) if n else CPU_MAX_MODEL_LEN}
