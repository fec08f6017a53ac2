"""Whisper's device and compute type per device (engines/whisper_args.py), pinned with a
faked CTranslate2 and a recording WhisperModel; and the phase memory read on a faked GPU.

No model loads: `ctranslate2.get_cuda_device_count` is faked both ways, faster-whisper's
`WhisperModel` is replaced by a class that records what it was given.
"""

from __future__ import annotations

import os
import stat
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from workbench.engines import whisper as whisper_engine
from workbench.engines import whisper_args
from workbench.runtime import device_memory


@pytest.fixture
def cuda_devices(monkeypatch: pytest.MonkeyPatch):
    """cuda_devices(n): CTranslate2 reports n CUDA devices from now on."""
    def fake(n: int) -> None:
        mod = types.ModuleType("ctranslate2")
        mod.get_cuda_device_count = lambda: n  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "ctranslate2", mod)
    return fake


class RecordingModel:
    seen: list[dict[str, Any]] = []

    def __init__(self, path: str, **kwargs: Any) -> None:
        RecordingModel.seen.append({"path": path, **kwargs})


@pytest.fixture
def recorded_load(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Load a WhisperEngine with faster-whisper's classes replaced; returns (kwargs, preloads)."""
    fw = types.ModuleType("faster_whisper")
    fw.WhisperModel = RecordingModel  # type: ignore[attr-defined]
    fw.BatchedInferencePipeline = lambda model: ("pipeline", model)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "faster_whisper", fw)
    monkeypatch.setattr(whisper_engine, "resolve_whisper_model", lambda name: str(tmp_path))
    preloads: list[int] = []
    monkeypatch.setattr(whisper_args, "preload_cuda_libraries", lambda: preloads.append(1) or [])
    RecordingModel.seen = []

    def load(**engine: Any) -> tuple[dict[str, Any], int]:
        whisper_engine.WhisperEngine(**engine).load()
        (kw,) = RecordingModel.seen
        RecordingModel.seen = []
        kw.pop("cpu_threads")
        return kw, len(preloads)
    return load


def test_cuda_device_gets_float16(cuda_devices, recorded_load) -> None:
    cuda_devices(1)
    assert whisper_args.whisper_args() == {"device": "cuda", "device_index": 0,
                                           "compute_type": "float16"}
    engine = whisper_engine.WhisperEngine()
    assert (engine.device, engine.compute_type) == ("cuda", "float16")
    kw, preloads = recorded_load()
    assert kw == {"path": kw["path"], "device": "cuda", "device_index": 0, "compute_type": "float16"}
    assert preloads == 1  # the cuBLAS/cuDNN wheels are loaded before CTranslate2 needs them


def test_cpu_gets_int8_and_no_cuda_libraries(cuda_devices, recorded_load) -> None:
    cuda_devices(0)
    assert whisper_args.whisper_args() == {"device": "cpu", "device_index": 0, "compute_type": "int8"}
    kw, preloads = recorded_load()
    assert (kw["device"], kw["compute_type"], preloads) == ("cpu", "int8", 0)


def test_the_jobs_choice_wins(cuda_devices, recorded_load) -> None:
    cuda_devices(2)
    assert whisper_args.whisper_args("cuda:1") == {"device": "cuda", "device_index": 1,
                                                   "compute_type": "float16"}
    assert whisper_args.whisper_args(compute_type="int8_float16")["compute_type"] == "int8_float16"
    assert whisper_args.whisper_args("cpu")["compute_type"] == "int8"  # a GPU box, CPU asked
    engine = whisper_engine.WhisperEngine(device="cuda:1")
    assert engine.device == "cuda:1"
    kw, _ = recorded_load(device="cuda:1", compute_type="int8_float16")
    assert (kw["device"], kw["device_index"], kw["compute_type"]) == ("cuda", 1, "int8_float16")


def test_no_ctranslate2_cuda_means_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = types.ModuleType("ctranslate2")

    def broken() -> int:
        raise RuntimeError("CUDA driver version is insufficient")
    mod.get_cuda_device_count = broken  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ctranslate2", mod)
    assert whisper_args.cuda_device_count() == 0
    assert whisper_args.default_device() == "cpu"


def test_cuda_library_files_found_in_the_wheels_layout(tmp_path: Path) -> None:
    site = tmp_path / "site"
    for rel in ("nvidia/cublas/lib/libcublas.so.12", "nvidia/cublas/lib/libcublasLt.so.12",
                "nvidia/cudnn/lib/libcudnn.so.9", "nvidia/cudnn/lib/libcudnn_ops.so.9",
                "nvidia/cu13/lib/libcublas.so.13"):
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_bytes(b"")
    names = [Path(p).name for p in whisper_args.cuda_library_files([str(tmp_path / "none"), str(site)])]
    assert names == ["libcublasLt.so.12", "libcublas.so.12", "libcudnn.so.9", "libcudnn_ops.so.9"]
    assert whisper_args.cuda_library_files([str(tmp_path / "none")]) == []


def test_phase_memory_on_a_gpu_reads_the_device(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    """The phased unload check compares device memory on CUDA (nvidia-smi when no NVML)."""
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho \"$@\" > \"$(dirname \"$0\")/args\"\necho 1234\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setitem(sys.modules, "pynvml", None)  # no NVML: the command-line tool
    assert device_memory.memory_in_use("cuda:1") == 1234 * device_memory.MiB
    assert (fake.parent / "args").read_text().split() == [
        "--id=1", "--query-gpu=memory.used", "--format=csv,noheader,nounits"]
    (fake.parent / "args").unlink()
    assert device_memory.memory_in_use("cpu") > 10 * device_memory.MiB  # this process's RSS
    assert not (fake.parent / "args").exists()  # the CPU path never asks nvidia-smi
