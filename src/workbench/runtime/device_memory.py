"""What a phase measures before load and after unload: device memory, or RSS on CPU.

On CUDA, used device memory from NVML (or `nvidia-smi` when pynvml is missing); on CPU,
the RSS of this process and its live children (a model held in a child still counts).
"""

from __future__ import annotations

import subprocess

import psutil

MiB = 1 << 20


def process_tree_rss() -> int:
    """RSS of this process plus its live descendants (a model in a child still counts)."""
    me = psutil.Process()
    total = me.memory_info().rss
    for child in me.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:  # exited between listing and reading
            continue
    return int(total)


def gpu_used_bytes(device: str) -> int | None:
    """Used memory of one CUDA device from NVML (or nvidia-smi); None when unreadable."""
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index)).used)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no pynvml or no driver: try the command-line tool
        pass
    try:
        out = subprocess.run(["nvidia-smi", f"--id={index}", "--query-gpu=memory.used",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=20, check=True).stdout
        return int(float(out.strip().splitlines()[0]) * MiB)
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def memory_in_use(device: str) -> int:
    """What a phase compares before load and after unload: device memory, or RSS on CPU."""
    if device.startswith("cuda"):
        used = gpu_used_bytes(device)
        if used is not None:
            return used
    return process_tree_rss()
