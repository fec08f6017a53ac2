"""Notebook 04 with a *real* kernel restart in the middle, as its text tells a user to do.

`pytest --nbmake` runs every notebook top to bottom, where 04 can only forget its variables
(`%reset -f`). Here nbclient runs the same cells, but restarts the kernel process at the
cell tagged `restart-kernel`, and the notebook must re-attach to the job the detached
worker kept running.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from jupyter_core.utils import run_sync
from nbclient import NotebookClient

from tests.conftest import REPO
from workbench import Status, Workbench
from workbench.store import Store

pytestmark = pytest.mark.vllm
#: long enough that the job is still running when the restart cell comes (the cell before
#: it waits only for the first answer; 60 rows finished in that gap on a quiet machine)
ROWS = 1500


def _text(cell: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream")


def _claimed_by(store: Store, job_id: str) -> list[int]:
    """The pids of the workers that claimed the job, in order (host:pid:nonce ids)."""
    return [int(e["data"]["worker"].split(":")[1]) for e in store.events(job_id, "claimed")]


def test_04_reattaches_after_a_real_kernel_restart(tmp_path: Path, tiny_llama: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "wb"
    for k, v in dict(WORKBENCH_ROOT=str(root), WORKBENCH_MODEL=str(tiny_llama), WB_NB_ROWS=str(ROWS),
                     WB_NB_MAX_TOKENS="24", WB_NB_WAIT_S="600").items():
        monkeypatch.setenv(k, v)
    nb = nbformat.read(REPO / "notebooks" / "04_resume_after_restart.ipynb", as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    kernel_pids: list[int] = []
    restarted_at = None
    with client.setup_kernel():
        kernel_pids.append(client.km.provisioner.process.pid)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            if "restart-kernel" in cell.metadata.get("tags", []):
                restarted_at = i
                first = Workbench(root).job((root / "notebook-04" / "job.txt").read_text())
                assert first.status == "in_progress", first  # the restart happens mid-job
                run_sync(client.km.restart_kernel)(now=True)
                run_sync(client.kc.wait_for_ready)(timeout=60)
                kernel_pids.append(client.km.provisioner.process.pid)
            client.execute_cell(cell, i)
    assert restarted_at is not None, "no cell tagged restart-kernel"
    assert kernel_pids[0] != kernel_pids[1], kernel_pids

    store = Workbench(root).store
    first_id, second_id = [r.id for r in store.list_jobs(kind="batch")]
    first, second = store.get(first_id), store.get(second_id)
    worker_pid = int(_text(nb.cells[3]).split()[2])  # "worker process P — this kernel is ..."
    assert (first.status, first.completed, first.attempts) == (Status.COMPLETED, ROWS, 1)
    assert _claimed_by(store, first_id) == [worker_pid]  # one worker, across the restart
    assert worker_pid not in kernel_pids
    reattached = "".join(_text(c) for c in nb.cells[restarted_at + 1:])
    assert f"completed: {ROWS} answers, all written by worker process {worker_pid}" in reattached
    assert (second.status, second.completed, second.attempts) == (Status.COMPLETED, ROWS, 2)
    killed, successor = _claimed_by(store, second_id)
    assert killed == worker_pid and successor not in (worker_pid, *kernel_pids)
    assert f"completed after 2 attempts: {ROWS} answers, each once" in reattached
    assert "stopped" in _text(nb.cells[-1])
