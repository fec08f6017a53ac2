"""Large inputs: split into jobs, backpressure on queue limits, merged results; bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.batch_helpers import request_lines, write_jsonl
from tests.conftest import REPO, make_wb, worker_env
from tests.engines import EchoEngine
from workbench import InvalidInput

ECHO = {"provider": "echo"}


def test_170k_split_into_50k_parts_with_backpressure_and_ordered_merge(tmp_path: Path) -> None:
    wb = make_wb(tmp_path / "wb", max_queued_jobs=2)
    src = write_jsonl(tmp_path / "big.jsonl", request_lines(170_000, max_tokens=3))
    waits: list[str] = []

    def on_wait(message: str) -> None:
        # the worker starts only once the third part has to wait: a worker that drains a
        # 50K part faster than the next one is validated would leave nothing to wait for
        if not waits:
            wb.start_worker()
        waits.append(message)

    group = wb.batch.submit_large(src, model="echo", engine=ECHO, poll_s=0.05,
                                  on_wait=on_wait, window=2048)
    assert [j.info.total for j in group.jobs] == [50_000, 50_000, 50_000, 20_000]
    assert len({j.info.group_id for j in group.jobs}) == 1
    assert waits and all("max_queued_jobs: 2 now + 1 submitted > 2" in w for w in waits)
    group.wait(timeout=600, progress=False)
    assert group.statuses == ["completed"] * 4 and group.progress == 100.0
    df = group.results()
    assert len(df) == 170_000
    assert list(df["custom_id"][:3]) == ["r0", "r1", "r2"] and df["custom_id"].iloc[-1] == "r169999"
    assert (df["custom_id"] == [f"r{i}" for i in range(170_000)]).all()
    assert wb.batch.group(group.group_id).ids == group.ids
    assert EchoEngine.max_inflight_seen <= 2048


def test_submit_large_refuses_whole_input_if_any_line_is_bad(tmp_path: Path) -> None:
    wb = make_wb(tmp_path / "wb")
    lines = request_lines(1_200)
    lines[1_100]["method"] = "GET"
    src = write_jsonl(tmp_path / "big.jsonl", lines)
    with pytest.raises(InvalidInput) as e:
        wb.batch.submit_large(src, model="echo", engine=ECHO, per_job=500)
    assert e.value.problems[0][:2] == (1_101, "method")
    assert wb.store.list_jobs() == []


def test_progressive_results_while_running(tmp_path: Path) -> None:
    wb = make_wb(tmp_path / "wb")
    src = write_jsonl(tmp_path / "in.jsonl", request_lines(400))
    job = wb.batch.submit(src, model="echo", engine={**ECHO, "delay_s": 0.005}, window=8)
    wb.start_worker()
    seen: list[int] = []
    while job.status not in ("completed", "failed"):
        seen.append(len(job.results()))
    assert job.status == "completed" and len(job.results()) == 400
    assert any(0 < n < 400 for n in seen), "results were never partially visible"
    assert seen == sorted(seen)
    dl = job.download(tmp_path / "all.jsonl")
    assert sorted(json.loads(x)["custom_id"] for x in dl.read_text().splitlines()) == sorted(
        f"r{i}" for i in range(400))


PEAK = """
import json, sys
sys.path.insert(0, {repo!r})
import tests.kinds
from tests.batch_helpers import request_lines, write_jsonl
from workbench import Workbench, Limits
from pathlib import Path
n = int(sys.argv[1]); root = Path(sys.argv[2])
src = root / "in.jsonl"
with open(src, "w") as f:
    for i in range(0, n, 1000):
        for x in request_lines(min(1000, n - i), prefix=f"b{{i}}-"):
            f.write(json.dumps(x) + "\\n")
def hwm_kb():  # VmHWM resets at exec, unlike ru_maxrss (inherited from the parent)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
wb = Workbench(root / "wb", limits=Limits(max_requests_per_job=200_000))
base = hwm_kb()
job = wb.batch.submit(src, model="echo", engine={{"provider": "echo"}}, window=1000)
from workbench.runtime.worker import Worker
Worker(wb.store).run_once()
assert job.status == "completed" and job.info.completed == n, job.info
print(json.dumps({{"base_kb": base, "peak_kb": hwm_kb()}}))
"""


def _peak(tmp_path: Path, n: int) -> dict[str, int]:
    root = tmp_path / f"peak{n}"
    root.mkdir()
    out = subprocess.run([sys.executable, "-c", PEAK.format(repo=str(REPO)), str(n), str(root)],
                         env=worker_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_peak_memory_does_not_grow_with_job_size(tmp_path: Path) -> None:
    small, large = _peak(tmp_path, 5_000), _peak(tmp_path, 50_000)
    grow_small = small["peak_kb"] - small["base_kb"]
    grow_large = large["peak_kb"] - large["base_kb"]
    # 10x the requests: the run may not add more than 16 MiB beyond the small run's growth
    assert grow_large - grow_small < 16 * 1024, (small, large)


def test_cancelled_group_stops_all_parts(tmp_path: Path) -> None:
    wb = make_wb(tmp_path / "wb")
    src = write_jsonl(tmp_path / "big.jsonl", request_lines(3_000))
    group = wb.batch.submit_large(src, model="echo", engine={**ECHO, "delay_s": 0.002},
                                  per_job=1_000, window=4)
    wb.start_worker()
    while group.jobs[0].info.completed < 10:
        time.sleep(0.01)
    group.cancel().wait(timeout=60, progress=False)
    assert group.statuses == ["cancelled"] * 3
    assert 10 <= len(group.results()) < 3_000
