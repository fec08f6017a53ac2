"""Device facts every layer may ask: is there a CUDA device?

A base module (no workbench imports) because the engines choose dtypes by it and the
model defaults (`workbench.models`) do too; the front doors never need to reach an
engine module for it.
"""

from __future__ import annotations


def has_gpu() -> bool:
    """A CUDA device is usable (torch installed and a GPU visible)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())
