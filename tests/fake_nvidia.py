"""A fake `nvidia-smi` for tests: a PATH folder whose nvidia-smi describes one GPU.

It answers the three ways workbench asks: `-L` (scripts/stack.sh), the CSV query of
index/name/memory/driver (doctor) and the bare call whose header names the CUDA version.
"""

from __future__ import annotations

import stat
from pathlib import Path

GPU_NAME = "NVIDIA GeForce RTX 4080"
SCRIPT = """#!/bin/sh
case "$1" in
  -L) echo "GPU 0: {name} (UUID: GPU-0f5a1c3e-7d2b-4c3e-9a1f-2b8c6d4e1a00)" ;;
  --query-gpu=*) echo "0, {name}, 16376, 15902, 580.95.05" ;;
  "") echo "| NVIDIA-SMI 580.95.05    Driver Version: 580.95.05    CUDA Version: 13.0 |" ;;
  *) exit 9 ;;
esac
"""


def fake_gpu_path(folder: Path) -> Path:
    """Write the fake into `folder` (created) and return the folder, to put first on PATH."""
    folder.mkdir(parents=True, exist_ok=True)
    f = folder / "nvidia-smi"
    f.write_text(SCRIPT.format(name=GPU_NAME))
    f.chmod(f.stat().st_mode | stat.S_IEXEC)
    return folder
