"""Shared fixtures. Everything runs offline: no hub downloads in tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]

import tests.kinds  # noqa: E402,F401  (registers the test job kinds)
from workbench import Limits, Workbench, WorkerTiming  # noqa: E402

FAST = WorkerTiming(heartbeat_s=0.2, stale_after_s=3.0, poll_s=0.05)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama folder built locally (no hub), shared by the whole session."""
    from tests.tiny_llama import build_tiny_llama

    cache = os.environ.get("WB_TEST_MODEL_CACHE")
    root = Path(cache) if cache else tmp_path_factory.mktemp("models")
    return build_tiny_llama(root / "tiny-llama")


@pytest.fixture
def wb(tmp_path: Path) -> Workbench:
    w = Workbench(tmp_path / "wb", timing=FAST)
    yield w
    w.stop_workers()


def make_wb(root: Path, **limits: int) -> Workbench:
    return Workbench(root, limits=Limits(**limits), timing=FAST)


def wait_until(pred: Callable[[], object], timeout: float = 60, what: str = "condition",
               interval: float = 0.02) -> None:
    """Poll `pred` until it is true; fail the test naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def worker_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(WORKBENCH_HEARTBEAT_S="0.2", WORKBENCH_STALE_AFTER_S="3", WORKBENCH_POLL_S="0.05",
               WORKBENCH_PLUGINS="tests.kinds")
    env.update(extra)
    return env


def spawn_worker(root: Path, *args: str, **env: str) -> subprocess.Popen[bytes]:
    """A real worker process (`workbench worker`), as a user would start one."""
    return subprocess.Popen(
        [sys.executable, "-m", "workbench.cli", "--root", str(root), "worker", *args],
        env=worker_env(**env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
