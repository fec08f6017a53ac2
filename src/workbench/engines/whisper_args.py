"""The one place that decides faster-whisper's device and compute type, like vllm_args.

Decided when the model loads, on the machine that loads it:

- **CUDA** (CTranslate2 sees a CUDA device): `float16`, faster-whisper's own choice for a
  GPU in its README and benchmarks. Its CUDA wheel loads cuBLAS and cuDNN 9 *for CUDA 12*
  at run time; the CUDA install set (`make env` on a GPU) brings them as the pip wheels
  `nvidia-cublas-cu12` / `nvidia-cudnn-cu12`, which are not on the loader's path, so
  `preload_cuda_libraries()` loads them first (faster-whisper's notes set
  LD_LIBRARY_PATH instead; a running Python cannot change its own loader path).
- **CPU**: `int8` (measured here: the fastest on this CPU with no loss on our clips).

A device or compute type the job gives always wins.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys
from typing import Any

#: the libraries CTranslate2's CUDA build opens, in load order (dependencies first)
CUDA_LIBRARIES = (("cublas", "libcublasLt.so.12"), ("cublas", "libcublas.so.12"),
                  ("cudnn", "libcudnn*.so.9"))

_preloaded: list[str] = []


def cuda_device_count() -> int:
    """CUDA devices CTranslate2 can use (0 when its build has no CUDA or there is no GPU)."""
    try:
        import ctranslate2

        return int(ctranslate2.get_cuda_device_count())
    except Exception:  # CTranslate2 built without CUDA support, or no driver
        return 0


def default_device(cuda_devices: int | None = None) -> str:
    """"cuda" when CTranslate2 sees a CUDA device, else "cpu"."""
    n = cuda_device_count() if cuda_devices is None else cuda_devices
    return "cuda" if n > 0 else "cpu"


def compute_type_for(device: str) -> str:
    """float16 on a CUDA device, int8 on the CPU."""
    return "float16" if device.startswith("cuda") else "int8"


def whisper_args(device: str = "auto", compute_type: str | None = None,
                 cuda_devices: int | None = None) -> dict[str, Any]:
    """`WhisperModel(...)`'s device, device_index and compute_type for this machine.

    `device` is "auto", "cpu", "cuda" or "cuda:N"; `cuda_devices` fakes what CTranslate2
    sees (tests), None asks it.
    """
    resolved = default_device(cuda_devices) if device == "auto" else device
    name, _, index = resolved.partition(":")
    return {"device": name, "device_index": int(index) if index else 0,
            "compute_type": compute_type or compute_type_for(resolved)}


def cuda_library_files(paths: list[str] | None = None) -> list[str]:
    """Files of the cuBLAS/cuDNN (CUDA 12) pip wheels under `paths` (default sys.path)."""
    found: list[str] = []
    for package, pattern in CUDA_LIBRARIES:
        for root in paths if paths is not None else sys.path:
            hits = sorted(glob.glob(os.path.join(root, "nvidia", package, "lib", pattern)))
            if hits:
                found.extend(h for h in hits if h not in found)
                break
    return found


def preload_cuda_libraries() -> list[str]:
    """Load the cuBLAS/cuDNN wheels' libraries globally, once, before CTranslate2 needs
    them; returns the files loaded (none on a machine without those wheels)."""
    if not _preloaded:
        for path in cuda_library_files():
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            except OSError:  # a cuDNN sub-library whose own dependency is missing
                continue
            _preloaded.append(path)
    return list(_preloaded)
