"""A local Ray start on a new machine: empty home folder, no Ray auth configured.

Ray reads its auth settings at import; before the fix, a machine without
`~/.ray/auth_token` failed every Ray job (`InvalidAuthToken ... RAY_AUTH_MODE is currently
'disabled'`) and the failed start left a `gcs_server` running. Each case runs in its own
Python process (Ray's import-time state is per process) with HOME pointing at an empty
folder, and checks what is left afterwards: no Ray process, nothing written in HOME.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.conftest import REPO

pytest.importorskip("ray")
pytestmark = pytest.mark.ray

SCRIPT = r"""
import json, os, sys
import psutil
PRE = sys.argv[1]
if PRE in ("import-first", "user-auth-after-import"):
    import ray  # something imported Ray before the workbench did (a notebook cell)
if PRE == "user-auth-after-import":  # the user sets auth too late: Ray already read it
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = "f" * 64
from workbench.engines.ray_cluster import RayRuntime, ray_processes

rt = RayRuntime()
out = {}
try:
    ray = rt.start()

    @ray.remote
    def double(x):
        return 2 * x

    out["answer"] = ray.get(double.remote(21))
    out["cpus"] = ray.cluster_resources().get("CPU")
except Exception as e:
    out["error"] = f"{type(e).__name__}: {e}"
    # what a failed start left, while this process (an idle worker) is still alive
    out["left_after_failure"] = [" ".join(p.cmdline())[:60] for p in ray_processes(os.environ["WORKBENCH_RAY_TMP"])]
finally:
    rt.stop()
out["left"] = [" ".join(p.cmdline())[:60] for p in ray_processes(os.environ["WORKBENCH_RAY_TMP"])]
print("RESULT " + json.dumps(out))
"""


def _run(tmp_path: Path, pre: str) -> tuple[dict, Path]:
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env.update(HOME=str(home), PYTHONPATH=str(REPO / "src") + os.pathsep + str(REPO),
               WORKBENCH_RAY_TMP=f"/tmp/wb-rs-{pre[:6]}-{os.getpid()}")
    env.pop("WORKBENCH_RAY_ADDRESS", None)
    p = subprocess.run([sys.executable, "-c", SCRIPT, pre], env=env, capture_output=True,
                       text=True, timeout=300)
    lines = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
    assert p.returncode == 0 and lines, f"rc {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT "):]), home


def _no_ray_daemons_under(tmp: str) -> list[str]:
    left = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or ())
        if tmp in cmd:
            left.append(cmd[:80])
    return left


@pytest.mark.parametrize("pre", ["fresh", "import-first"])
def test_local_start_with_empty_home_runs_and_writes_nothing_there(tmp_path: Path, pre: str) -> None:
    out, home = _run(tmp_path, pre)
    assert "error" not in out, out.get("error")
    assert out["answer"] == 42
    assert out["cpus"] == os.cpu_count()
    assert out["left"] == [], out["left"]
    # the token lived in the environment only: no ~/.ray/auth_token, nothing else either
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == []


def test_failed_start_says_why_and_leaves_no_ray_process(tmp_path: Path) -> None:
    """Auth set by the user after `import ray`: the start fails (Ray's own rule), and the
    GCS it had spawned is stopped while the process that tried lives on."""
    out, _ = _run(tmp_path, "user-auth-after-import")
    assert "InvalidAuthToken" in out["error"] or "auth" in out["error"].lower(), out["error"]
    assert "set RAY_AUTH_MODE / RAY_AUTH_TOKEN before the first `import ray`" in out["error"]
    assert out["left_after_failure"] == [], out["left_after_failure"]
    assert out["left"] == []
    assert _no_ray_daemons_under(f"/tmp/wb-rs-user-a-{os.getpid()}") == []
