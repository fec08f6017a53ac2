"""The Ray runtime a batch job's driver uses: a local one sized to this machine, or a cluster.

`WORKBENCH_RAY_ADDRESS` set (e.g. `127.0.0.1:6379` after `ray start --head`): join that
cluster. Unset: a local `ray.init` with `os.cpu_count()` CPUs, no dashboard, its temp
dir under `$WORKBENCH_RAY_TMP` (default /tmp/wb-ray: Ray's socket paths must stay short),
and `log_to_driver=False` so a notebook running the worker stays quiet.

Why a fresh runtime per job, stopped at the end: the replicas hold the device(s) and
gigabytes of memory; a finished or cancelled job must leave no actor and no engine
process behind, and the next job may want the device for the in-process engine. A local
start costs ~3-7 s against ~15-20 s of replica load, measured here.

No secret on disk: a new local Ray cluster turns token authentication on and writes the
token to `~/.ray/auth_token` (measured, /tmp/ray-lab q10). Unless the user configured
Ray's auth, we give the local cluster a random token in the environment instead (Ray
reads `RAY_AUTH_TOKEN` there; children inherit it), which writes nothing. Ray reads its
auth settings when it is imported (measured: set after `import ray`, the driver sends no
token while the GCS it spawns wants one, and `ray.init` fails with InvalidAuthToken on any
machine without a token file), so they are set before the first import, and Ray's cached
config is refreshed the way Ray itself does it (`Config.initialize("")` + the token
loader's `reset_cache()`) when something imported Ray earlier in this process.

A failed local start must leave nothing running: `ray.init` may have spawned a GCS and a
raylet before it gave up, and nothing else would ever stop them (the worker stays up,
idle). They are Ray's own processes under this runtime's temp dir: `ray.shutdown()` plus
killing what is left there.

The environment the replicas need (offline flags, vLLM's CPU settings) is shipped as
`runtime_env.env_vars`, so replicas on other nodes get it too; paths that only exist on
the driver (vLLM's socket and cache dirs) are left for each node to choose.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger("workbench.ray")

ADDRESS_VAR = "WORKBENCH_RAY_ADDRESS"
#: environment prefixes the replicas inherit from the driver
PASSED_PREFIXES = ("HF_HUB_", "TRANSFORMERS_", "TOKENIZERS_", "VLLM_", "WORKBENCH_MODEL")
#: never shipped: secrets, and paths that exist on the driver only
NOT_PASSED = frozenset({"HF_TOKEN", "VLLM_RPC_BASE_PATH", "VLLM_CACHE_ROOT", "WORKBENCH_MODELS"})


def replica_env() -> dict[str, str]:
    """The driver's settings a replica process must see before it imports vLLM.

    Only what the user set: each replica decides its device's defaults itself when its
    engine loads (`engines.vllm_args.apply_env`; a GPU node must not get the CPU recipe).
    """
    return {k: v for k, v in os.environ.items()
            if k.startswith(PASSED_PREFIXES) and k not in NOT_PASSED}


_AUTH_HINT = ("Ray could not start a local cluster: the token this process sends is not the"
              " one the cluster it started expects (Ray reads its auth settings when it is"
              " imported); set RAY_AUTH_MODE / RAY_AUTH_TOKEN before the first `import ray`,"
              " or leave them unset and workbench gives the cluster a token. Ray said: ")


def auth_in_environment() -> bool:
    """Give a local cluster a token in the environment unless the user configured auth.

    Call before `import ray` (Ray reads these at import). Returns whether it set them.
    """
    if any(os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")):
        return False  # the user chose
    if (Path.home() / ".ray" / "auth_token").exists():
        return False  # Ray will use the user's own token file
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    if "ray._raylet" in sys.modules:  # imported before us: refresh what it read then
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    return True


def ray_processes(temp_dir: str) -> list[psutil.Process]:
    """Ray's daemons (GCS, raylet, workers) whose command line names `temp_dir`."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or ())
        except psutil.Error:
            continue
        if temp_dir in cmd and p.pid != os.getpid():
            found.append(p)
    return found


def _kill(procs: list[psutil.Process]) -> None:
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(procs, timeout=10)


class RayRuntime:
    """Start (or join) Ray for one job and stop it afterwards; never touch a runtime that
    someone else started in this process (a notebook's own `ray.init`)."""

    def __init__(self) -> None:
        self.ours = False

    def start(self) -> Any:
        if not os.environ.get(ADDRESS_VAR) and "ray" not in sys.modules:
            auth_in_environment()  # before the first import: Ray reads auth at import
        import ray
        import ray.data

        if not ray.is_initialized():
            self._init(ray)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        # each chunk a replica yields becomes its own block, so results stream back
        # while its batch runs (default 128 MiB would hold them until the batch ends)
        ctx.target_max_block_size = 4096
        return ray

    def _init(self, ray: Any) -> None:
        address = os.environ.get(ADDRESS_VAR) or None
        kw: dict[str, Any] = dict(runtime_env={"env_vars": replica_env()}, log_to_driver=False,
                                  configure_logging=False)
        if address:
            ray.init(address=address, **kw)
        else:
            auth_in_environment()  # no-op when set before the import (or by the user)
            tmp = os.environ.get("WORKBENCH_RAY_TMP") or "/tmp/wb-ray"
            os.makedirs(tmp, exist_ok=True)
            before = {p.pid for p in ray_processes(tmp)}
            try:
                ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, _temp_dir=tmp,
                         **kw)
            except BaseException as e:
                self._clean_failed_start(ray, tmp, before)
                if "InvalidAuthToken" in str(e):
                    raise RuntimeError(_AUTH_HINT + str(e).strip().splitlines()[0]) from e
                raise
        self.ours = True
        log.info("ray %s: %s", "joined" if address else "started", ray.cluster_resources())

    @staticmethod
    def _clean_failed_start(ray: Any, tmp: str, before: set[int]) -> None:
        """Stop what a failed `ray.init` spawned (measured: a GCS stays up otherwise)."""
        try:
            ray.shutdown()
        except Exception:
            log.debug("ray.shutdown after a failed start", exc_info=True)
        left = [p for p in ray_processes(tmp) if p.pid not in before]
        if left:
            log.warning("ray failed to start; stopping %d process(es) it left", len(left))
            _kill(left)

    def stop(self) -> None:
        if not self.ours:
            return
        import ray

        self.ours = False
        try:
            ray.shutdown()
        except Exception:
            log.warning("ray.shutdown failed", exc_info=True)
