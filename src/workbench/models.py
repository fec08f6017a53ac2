"""Which model a job uses, and the engine arguments that work for it on this machine.

`model=None` means `$WORKBENCH_MODEL`, else the embedded demo model (Gemma 3 270M,
prepared offline from PyPI packages on first use and cached under data/models/).
The engine arguments themselves are decided per device when the engine loads
(`engines/vllm_args.py`: the RECIPES recipe on CPU, vLLM's own defaults on a GPU); the
job spec keeps only what the user said.
"""

from __future__ import annotations

from typing import Any

from workbench.config import EMBEDDED_EMBEDDER, EMBEDDED_LLM, default_model, models_dir
from workbench.engines.vllm_args import CPU_MAX_MODEL_LEN

__all__ = ["CPU_MAX_MODEL_LEN", "engine_spec", "resolve"]


def resolve(model: str) -> str:
    """A name vLLM can load: embedded names are prepared (once) and become folders."""
    if model == EMBEDDED_LLM:
        from workbench.demo_model import prepare_gemma

        return str(prepare_gemma(models_dir() / "gemma-3-270m"))
    if model == EMBEDDED_EMBEDDER:
        from workbench.engines.embed_model import prepare_minilm

        return str(prepare_minilm(models_dir() / "all-minilm-l6-v2"))
    return model


def model_kind(model: str) -> str | None:
    """"embed" for an embedding (encoder) model, "generate" for a causal LM, None when a
    name cannot be told without loading it (a hub id, a remote model). Read from the
    folder's config.json `architectures`, so a chat model asked for embeddings (or the
    reverse) is refused in words instead of being adapted silently by vLLM."""
    if model == EMBEDDED_EMBEDDER:
        return "embed"
    if model == EMBEDDED_LLM:
        return "generate"
    import json
    from pathlib import Path

    cfg = Path(model).expanduser() / "config.json"
    try:
        archs = json.loads(cfg.read_text()).get("architectures") or []
    except (OSError, ValueError):
        return None
    if any(a.endswith(("ForCausalLM", "ForConditionalGeneration")) for a in archs):
        return "generate"
    if archs:
        return "embed"
    return None


def engine_spec(model: str | None, engine: dict[str, Any] | None = None) -> dict[str, Any]:
    """The engine part of a job spec. Holds names and numbers only — never a secret."""
    engine = dict(engine or {})
    provider = engine.get("provider", "vllm")
    name = model or engine.get("model") or default_model()
    spec: dict[str, Any] = {"provider": provider, "model": name, "model_name": name}
    spec.update({k: v for k, v in engine.items() if k != "provider"})
    spec["model"] = name
    if provider == "vllm":  # a misspelt or mistyped engine setting is refused at submit
        _check_vllm(spec)
    if provider == "openai":  # refuse now what would fail every request later
        from workbench.engines.openai_http import check_spec

        check_spec(spec)
    return spec


def _check_vllm(spec: dict[str, Any]) -> None:
    from pydantic import ValidationError

    from workbench.engines.vllm_args import VLLMSettings
    from workbench.errors import InvalidInput

    try:
        VLLMSettings(**{k: v for k, v in spec.items() if k not in ("provider", "model_name")})
    except ValidationError as e:
        raise InvalidInput([(None, "engine." + ".".join(map(str, x["loc"])),
                             "unsupported engine setting" if x["type"] == "extra_forbidden"
                             else x["msg"]) for x in e.errors()],
                           source="engine settings") from None
