"""The vLLM arguments chosen per device (engines/vllm_args.py), pinned with a fake LLM class.

No vLLM is loaded: `engines.vllm._llm_class` is replaced by a class that records what it
was given, and the GPU probe (`workbench.device.has_gpu`) is faked both ways.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from workbench import device
from workbench.engines import vllm as vllm_engine
from workbench.engines import vllm_args
from workbench.errors import InvalidInput
from workbench.models import engine_spec

ENV_KEYS = ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_CPU_KVCACHE_SPACE", "VLLM_RPC_BASE_PATH",
            "VLLM_CACHE_ROOT")


class FakeLLM:
    """Records the keyword arguments and the vLLM environment at construction."""

    seen: list[tuple[dict[str, Any], dict[str, str | None]]] = []

    def __init__(self, **kwargs: Any) -> None:
        FakeLLM.seen.append((kwargs, {k: os.environ.get(k) for k in ENV_KEYS}))
        max_len = kwargs.get("max_model_len", 8192)
        self.llm_engine = type("E", (), {"model_config": type("C", (), {"max_model_len": max_len})})()


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"max_position_embeddings": 32768}))
    return d


@pytest.fixture
def load(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """load(gpu, **engine) -> (kwargs passed to vllm.LLM, vLLM env vars at that moment)."""
    monkeypatch.setattr(vllm_engine, "_llm_class", lambda: FakeLLM)
    monkeypatch.setenv("WORKBENCH_VLLM_TMP", str(tmp_path / "vtmp"))

    def run(gpu: bool, model: Path, **engine: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        for k in ENV_KEYS:  # the test env (Makefile) sets some: start from a clean slate
            monkeypatch.delenv(k, raising=False)
        monkeypatch.setattr(device, "has_gpu", lambda: gpu)
        FakeLLM.seen.clear()
        spec = engine_spec(str(model), engine)
        spec.pop("model_name")
        spec.pop("provider")
        vllm_engine.VLLMEngine(**spec).load()
        (kwargs, env), = FakeLLM.seen
        return kwargs, env

    return run


STRUCTURED = {"backend": "guidance", "disable_any_whitespace": True}


def test_cpu_gets_the_recipe(load, model_dir: Path, tmp_path: Path) -> None:
    kwargs, env = load(False, model_dir)
    assert kwargs == {"model": str(model_dir), "seed": 0, "enable_prefix_caching": True,
                      "dtype": "float32", "enforce_eager": True, "max_model_len": 4096,
                      "structured_outputs_config": STRUCTURED}
    assert env == {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1",
                   "VLLM_RPC_BASE_PATH": str(tmp_path / "vtmp"),
                   "VLLM_CACHE_ROOT": str(tmp_path / "vtmp" / "cache")}


def test_cpu_context_below_the_cap_is_kept(load, tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    (small / "config.json").write_text(json.dumps({"text_config": {"max_position_embeddings": 512}}))
    kwargs, _ = load(False, small)
    assert kwargs["max_model_len"] == 512


def test_gpu_gets_vllms_own_defaults(load, model_dir: Path) -> None:
    kwargs, env = load(True, model_dir)
    # CUDA graphs (enforce_eager False), dtype auto, no context cap, no KV size, prefix caching
    assert kwargs == {"model": str(model_dir), "seed": 0, "enable_prefix_caching": True,
                      "dtype": "auto", "enforce_eager": False,
                      "structured_outputs_config": STRUCTURED}
    # multiprocess engine core: the variable is left to vLLM (default 1); no CPU KV space
    assert env["VLLM_ENABLE_V1_MULTIPROCESSING"] is None
    assert env["VLLM_CPU_KVCACHE_SPACE"] is None


def test_gpu_passes_the_jobs_settings_through(load, model_dir: Path) -> None:
    kwargs, _ = load(True, model_dir, gpu_memory_utilization=0.8, max_num_seqs=512,
                     tensor_parallel_size=4, max_model_len=8192)
    assert kwargs == {"model": str(model_dir), "seed": 0, "enable_prefix_caching": True,
                      "dtype": "auto", "enforce_eager": False, "gpu_memory_utilization": 0.8,
                      "max_num_seqs": 512, "tensor_parallel_size": 4, "max_model_len": 8192,
                      "structured_outputs_config": STRUCTURED}


def test_the_jobs_values_win_over_device_defaults(load, model_dir: Path) -> None:
    kwargs, _ = load(False, model_dir, dtype="bfloat16", enforce_eager=False,
                     enable_prefix_caching=False, max_model_len=1024, structured_outputs=False,
                     kv_cache_memory_bytes=64 * 2**20)
    assert kwargs == {"model": str(model_dir), "seed": 0, "enable_prefix_caching": False,
                      "dtype": "bfloat16", "enforce_eager": False, "max_model_len": 1024,
                      "kv_cache_memory_bytes": 64 * 2**20}


def test_an_environment_variable_already_set_wins(load, model_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    vllm_args.apply_env(gpu=False)  # the helper itself: setdefault semantics
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "3")
    vllm_args.apply_env(gpu=False)
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "3"


def test_the_spec_keeps_only_what_the_user_said() -> None:
    spec = engine_spec("some/model", {"max_num_seqs": 8})
    assert spec == {"provider": "vllm", "model": "some/model", "model_name": "some/model",
                    "max_num_seqs": 8}


def test_a_misspelt_engine_setting_is_refused_at_submit() -> None:
    with pytest.raises(InvalidInput) as e:
        engine_spec("m", {"enforce_eagre": True, "max_num_seqs": "many"})
    text = str(e.value)
    assert "engine.enforce_eagre: unsupported engine setting" in text
    assert "engine.max_num_seqs" in text and "integer" in text
