"""JupyterLab in a real browser: notebooks 00–03 run top to bottom, Cancel is clicked on a
batch panel and on a grid panel, the rows fit a 1,000 px column, nothing lands in stderr,
and a saved notebook reopened without its kernel still shows its dashboard.

Debian's chromium driven by Python playwright (no browser download). JupyterLab runs on
127.0.0.1 with a throw-away settings dir (news popup off, every cell rendered) on *copies*
of the notebooks, so Lab's autosave never writes outputs into the repository. The kernels
import this checkout (PYTHONPATH) and use a tiny local model (`WORKBENCH_MODEL`) and a
temporary store (`WORKBENCH_ROOT`), which the test also opens to find the jobs' ids and
check their final statuses. Screenshots go to artifacts/browser/ (light and dark theme).

This is the run of 00–03 in CI (nbmake runs every notebook too, at its smallest sizes).
About 130 s on the 2-core box (00 39 s, 01 31 s, 02 27 s, 03 14 s, then the reopen;
artifacts/browser/timings.json has each run's figures).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO
from workbench.store import Status, Store

pytestmark = [pytest.mark.browser, pytest.mark.vllm, pytest.mark.stt]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = REPO / "artifacts" / "browser"
NOTEBOOKS = ["00_quickstart", "01_batch_inference", "02_phased_stt_eval", "03_comparison_grid"]
COLUMN_PX = 1000  # the notebook column the rows must fit
OVERRIDES = {
    "@jupyterlab/apputils-extension:notification": {"checkForUpdates": False,
                                                    "fetchNews": "false"},
    # render every cell (no virtual scrolling) so widgets far down the page exist in the DOM
    "@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"},
}
#: the notebook on screen (the tabs of earlier notebooks stay in the DOM, hidden)
NB = ".jp-NotebookPanel:not(.lm-mod-hidden)"
#: Lab renders both stderr streams and errors (tracebacks) with this mime type
STDERR = f"{NB} .jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"


@dataclass
class Lab:
    url: str
    root: Path  # the workbench store the kernels use
    nbdir: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def sessions(self) -> list[dict[str, Any]]:
        r = _get(f"{self.url}/api/sessions")
        return r.json() if r is not None else []

    def session(self, name: str) -> dict[str, Any] | None:
        return next((s for s in self.sessions() if s["path"].endswith(f"{name}.ipynb")), None)

    def shutdown(self, name: str, cookies: dict[str, str]) -> None:
        """Delete the notebook's session: its kernel stops (DELETE needs the _xsrf cookie)."""
        s = self.session(name)
        if s is not None:
            httpx.delete(f"{self.url}/api/sessions/{s['id']}", cookies=cookies,
                         headers={"X-XSRFToken": cookies.get("_xsrf", "")}, timeout=30)
        _until(lambda: self.session(name) is None, 60, f"{name}'s kernel to stop", self.log)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def lab(tmp_path: Path, tiny_llama: Path) -> Iterator[Lab]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (make env installs it)")
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    for name in NOTEBOOKS:
        shutil.copy(REPO / "notebooks" / f"{name}.ipynb", nbdir)
    settings = tmp_path / "lab-settings"
    settings.mkdir()
    (settings / "overrides.json").write_text(json.dumps(OVERRIDES))
    root = tmp_path / "wb"
    env = dict(os.environ)
    env.update(
        WORKBENCH_ROOT=str(root), WORKBENCH_MODEL=str(tiny_llama), HF_HUB_OFFLINE="1",
        PYTHONPATH=str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", ""),
        # 00: a first job of 8, then one long enough to be cancelled by a click
        WB_NB_ROWS="8", WB_NB_LONG_ROWS="20000", WB_NB_MAX_TOKENS="16", WB_NB_WAIT_S="600",
        # 02: one batch of two students; 03: a grid long enough to be cancelled
        # (02's JSON evaluation must fit the tiny model's 512-token context)
        WB_NB_STUDENTS="2", WB_NB_BATCH_SIZE="2", WB_NB_LLM_MAX_TOKENS="140",
        WB_NB_FEEDBACK_CHARS="40", WB_NB_MEDIA="3", WB_NB_PROMPTS="4",
        WB_NB_JUDGE_CHARS="120",
        WORKBENCH_HEARTBEAT_S="0.3", WORKBENCH_POLL_S="0.1",
        JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter-config"),
        JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter-runtime"),
    )
    port = _free_port()
    log = tmp_path / "lab.log"
    cmd = [str(Path(sys.executable).parent / "jupyter-lab"), "--no-browser", "--allow-root",
           "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
           "--IdentityProvider.token=", "--ServerApp.password=",
           f"--ServerApp.root_dir={nbdir}", f"--LabApp.app_settings_dir={settings}",
           f"--LabApp.user_settings_dir={tmp_path / 'user-settings'}",
           f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}"]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _until(lambda: proc.poll() is None and _get(f"{url}/api/status") is not None,
               60, "JupyterLab to answer", log, stop=lambda: proc.poll() is not None)
        yield Lab(url, root, nbdir, proc, log)
    finally:
        proc.send_signal(signal.SIGTERM)  # the server shuts its kernels down with it
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the group this fixture started
            proc.wait(timeout=10)


def _get(url: str) -> httpx.Response | None:
    try:
        r = httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None
    return r if r.status_code == 200 else None


def _until(pred: Callable[[], object], timeout: float, what: str, log: Path | None = None,
           stop: Callable[[], bool] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        if stop is not None and stop():
            break
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


def _jobs(lab: Lab, kind: str) -> list[str]:
    if not (lab.root / "workbench.db").exists():
        return []
    return [r.id for r in Store(lab.root).list_jobs(kind=kind)]


# -- driving one notebook ------------------------------------------------------------------
def run_all(page: Any, lab: Lab, name: str) -> None:
    page.goto(f"{lab.url}/lab/tree/{name}.ipynb")
    page.wait_for_selector(f"{NB} .jp-Notebook", timeout=60_000)
    _until(lambda: (s := lab.session(name)) is not None
           and s["kernel"]["execution_state"] == "idle", 90, f"{name}'s kernel", lab.log)
    page.click(f"{NB} .jp-Notebook")  # focus, else Run All does nothing
    page.click(".lm-MenuBar-itemLabel:text-is('Run')")
    page.click("li[data-command='runmenu:run-all']")


def finished(page: Any) -> bool:
    """Run All is over: no cell waits or runs (`[*]`) and the first code cell ran. After an
    error, the cells below it are left unnumbered (`[ ]`), so this also ends on an error."""
    prompts = page.locator(f"{NB} .jp-CodeCell .jp-InputPrompt").all_inner_texts()
    return (bool(prompts) and re.search(r"\[\d+\]", prompts[0]) is not None
            and not any("*" in p for p in prompts))


def saved_outputs(lab: Lab, name: str, kind: str) -> list[str]:
    """The saved notebook's outputs of one kind: 'error' (traceback) or 'stderr' (stream)."""
    nb = json.loads((lab.nbdir / f"{name}.ipynb").read_text())
    out = []
    for i, cell in enumerate(nb["cells"]):
        for o in cell.get("outputs", []):
            if kind == "error" and o["output_type"] == "error":
                out.append(f"cell {i}: {o['ename']}: {o['evalue']}\n" +
                           re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(o["traceback"]))[-1500:])
            elif kind == "stderr" and o["output_type"] == "stream" and o["name"] == "stderr":
                out.append(f"cell {i}: " + "".join(o["text"])[:500])
    return out


def wait_finished(page: Any, lab: Lab, name: str, timeout: float = 600) -> None:
    """Wait for Run All to end, save, and assert from the saved file: every code cell ran,
    none raised, nothing was written to stderr (engine noise goes to the job's log)."""
    _until(lambda: finished(page), timeout, f"{name} to run to the end", lab.log)
    save(page, lab, name)
    errors = saved_outputs(lab, name, "error")
    assert not errors, f"{name}: a cell failed:\n" + "\n".join(errors)
    nb = json.loads((lab.nbdir / f"{name}.ipynb").read_text())
    unrun = [i for i, c in enumerate(nb["cells"])
             if c["cell_type"] == "code" and c.get("execution_count") is None]
    assert not unrun, f"{name}: cells {unrun} did not run"
    assert not saved_outputs(lab, name, "stderr"), saved_outputs(lab, name, "stderr")


def stderr_outputs(page: Any) -> list[str]:
    return [t[:500] for t in page.locator(STDERR).all_inner_texts()]


def save(page: Any, lab: Lab, name: str) -> None:
    """Save through File → Save Notebook and wait until the file on disk is rewritten (not
    for the dirty mark to go: a panel's snapshot output updating after the save sets it
    again)."""
    path = lab.nbdir / f"{name}.ipynb"
    before = path.stat().st_mtime_ns
    for attempt in range(3):
        try:
            if attempt == 0:
                page.keyboard.press("Control+s")
            else:  # the key went to a widget: the menu does not depend on focus
                page.click(".lm-MenuBar-itemLabel:text-is('File')")
                page.click("li[data-command='docmanager:save']", timeout=5000)
            _until(lambda: path.stat().st_mtime_ns != before, 10, f"{name} to be saved")
            return
        except Exception:  # playwright's timeout or _until's; try the next way
            page.keyboard.press("Escape")  # close the menu if it stayed open
    raise AssertionError(f"{name} was not saved after three tries")


def set_column(page: Any) -> None:
    """Size the window so the notebook column is COLUMN_PX wide."""
    width = page.locator(NB).first.evaluate("e => e.getBoundingClientRect().width")
    vp = page.viewport_size
    page.set_viewport_size({"width": int(vp["width"] - (width - COLUMN_PX)), "height": vp["height"]})
    page.wait_for_timeout(300)


def clipped_parts(page: Any) -> list[str]:
    """Parts of job rows whose text is cut (scrollWidth > clientWidth) or that stick out of
    their row's box, and buttons whose label is shortened."""
    return page.evaluate("""(nb) => {
      const bad = [];
      for (const row of document.querySelectorAll(nb + ' .wb-job')) {
        const box = row.getBoundingClientRect();
        if (box.width === 0) continue;
        const parts = row.querySelectorAll(
          '.wb-line > *, .wb-info > *, .widget-html-content, button, .wb-badge, .wb-id');
        for (const el of parts) {
          const r = el.getBoundingClientRect();
          if (r.width === 0) continue;
          const name = (el.className || el.tagName).toString().slice(0, 60) + ' "' +
                       (el.innerText || '').slice(0, 40) + '"';
          if (el.scrollWidth > el.clientWidth + 1) bad.push('cut: ' + name);
          if (r.right > box.right + 1 || r.left < box.left - 1) bad.push('outside: ' + name);
        }
        for (const id of row.querySelectorAll('.wb-id')) {
          if (id.getClientRects().length > 1) bad.push('id wraps: ' + id.innerText);
        }
      }
      // nothing of a panel or dashboard sticks out of the notebook's output column
      for (const out of document.querySelectorAll(nb + ' .jp-OutputArea-output')) {
        const edge = out.getBoundingClientRect().right;
        for (const el of out.querySelectorAll('.wb-panel .widget-html-content > *, ' +
                                              '.wb-dashboard .widget-html-content > *')) {
          const r = el.getBoundingClientRect();
          const scrolls = ['auto', 'scroll'].includes(getComputedStyle(el).overflowX);
          if (r.width > 0 && !scrolls && (r.right > edge + 1 || el.scrollWidth > el.clientWidth + 1))
            bad.push('beyond the column: ' + (el.innerText || '').slice(0, 60) + ' [' +
                     [r.right, edge, el.scrollWidth, el.clientWidth,
                      el.parentElement.parentElement.className].join(' ') + ']');
        }
      }
      return bad;
    }""", NB)


def shot(page: Any, locator: Any | None, name: str) -> None:
    if locator is not None:
        locator.scroll_into_view_if_needed()
        locator.screenshot(path=str(ARTIFACTS / name))
    else:
        page.screenshot(path=str(ARTIFACTS / name))


def dark_theme(page: Any, on: bool) -> None:
    page.click(".lm-MenuBar-itemLabel:text-is('Settings')")
    page.click(".lm-Menu-itemLabel:text-is('Theme')")
    page.click(f".lm-Menu-itemLabel:text-is('{'JupyterLab Dark' if on else 'JupyterLab Light'}')")
    page.wait_for_timeout(1500)


# -- the test ---------------------------------------------------------------------------------
def test_notebooks_00_to_03_in_jupyterlab(lab: Lab) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        try:
            cookies: dict[str, str] = {}

            # 00: a first job completes; Cancel is clicked on the longer job's panel
            t0 = time.monotonic()
            run_all(page, lab, "00_quickstart")
            set_column(page)
            cookies = {c["name"]: c["value"] for c in page.context.cookies()}
            _until(lambda: len(_jobs(lab, "batch")) >= 2, 300, "00's longer job", lab.log)
            first, long_id = _jobs(lab, "batch")[:2]
            dash = page.locator(f"{NB} .wb-dashboard").first
            expect(dash.locator(f".wb-job-{first} .wb-badge")).to_have_text("completed",
                                                                         timeout=180_000)
            long_panel = page.locator(f"{NB} .wb-panel:has(.wb-job-{long_id})")
            expect(long_panel.locator(".wb-badge")).to_have_text("in progress", timeout=120_000)
            expect(long_panel.locator(".wb-rate")).to_contain_text("req/s", timeout=60_000)
            expect(long_panel.locator(".wb-eta")).to_contain_text("ETA", timeout=60_000)
            # the dashboard refreshes slower while nothing runs: wait until it shows the job
            expect(dash.locator(f".wb-job-{long_id} .wb-badge")).to_have_text("in progress",
                                                                           timeout=30_000)
            shot(page, dash, "00-dashboard-running.png")
            assert not clipped_parts(page), clipped_parts(page)
            long_panel.locator("button.wb-cancel").click()
            expect(long_panel.locator(".wb-badge")).to_have_text("cancelled", timeout=60_000)
            wait_finished(page, lab, "00_quickstart")
            row = Store(lab.root).get(long_id)
            assert row.status is Status.CANCELLED and 0 < row.completed < row.total == 20000
            assert Store(lab.root).get(first).status is Status.COMPLETED
            expect(page.locator(f"{NB} .jp-OutputArea-output").filter(
                has_text="cancelled, as you asked")).to_have_count(1)
            assert not stderr_outputs(page), stderr_outputs(page)
            first_panel = page.locator(f"{NB} .wb-panel:has(.wb-job-{first})")
            expect(first_panel.locator(".wb-preview")).to_contain_text("newest 8 of 8 results")
            expect(first_panel.locator(".wb-batch-speed")).to_contain_text("req/s")
            first_panel.locator("button.wb-log-button").click()
            expect(first_panel.locator(".wb-log-text")).to_contain_text("vllm", timeout=10_000)
            assert not clipped_parts(page), clipped_parts(page)
            shot(page, first_panel, "00-panel-with-log.png")
            expect(dash.locator(f".wb-job-{long_id} .wb-badge")).to_have_text("cancelled",
                                                                           timeout=30_000)
            dash.scroll_into_view_if_needed()
            shot(page, dash, "00-dashboard.png")
            shot(page, None, "00-page.png")
            dark_theme(page, True)
            shot(page, dash, "00-dashboard-dark.png")
            shot(page, first_panel, "00-panel-dark.png")
            dark_theme(page, False)
            save(page, lab, "00_quickstart")
            lab.shutdown("00_quickstart", cookies)
            timings["00"] = time.monotonic() - t0

            # 01: the form's Model field is there in DataFrame mode; the notebook runs through
            t0 = time.monotonic()
            run_all(page, lab, "01_batch_inference")
            form = page.locator(f"{NB} .wb-batch-form").first
            expect(form.locator(".wb-model input")).to_be_visible(timeout=120_000)
            wait_finished(page, lab, "01_batch_inference")
            assert not stderr_outputs(page), stderr_outputs(page)
            assert not clipped_parts(page), clipped_parts(page)
            shot(page, form, "01-form.png")
            save(page, lab, "01_batch_inference")
            lab.shutdown("01_batch_inference", cookies)
            timings["01"] = time.monotonic() - t0

            # 02: the phased job runs through (Whisper, then the LLM); its panel fits
            t0 = time.monotonic()
            run_all(page, lab, "02_phased_stt_eval")
            wait_finished(page, lab, "02_phased_stt_eval")
            assert not stderr_outputs(page), stderr_outputs(page)
            assert not clipped_parts(page), clipped_parts(page)
            (phased,) = _jobs(lab, "phased")
            assert Store(lab.root).get(phased).status is Status.COMPLETED
            shot(page, page.locator(f"{NB} .wb-panel-phased").first, "02-panel.png")
            save(page, lab, "02_phased_stt_eval")
            lab.shutdown("02_phased_stt_eval", cookies)
            timings["02"] = time.monotonic() - t0

            # 03: Cancel is clicked on the grid's panel; the cells below take the partial grid
            t0 = time.monotonic()
            run_all(page, lab, "03_comparison_grid")
            _until(lambda: _jobs(lab, "grid"), 300, "03's grid", lab.log)
            (grid,) = _jobs(lab, "grid")
            grid_panel = page.locator(f"{NB} .wb-panel:has(.wb-job-{grid})")
            expect(grid_panel.locator(".wb-badge")).to_have_text("in progress", timeout=120_000)
            grid_panel.locator("button.wb-cancel").click()
            expect(grid_panel.locator(".wb-badge")).to_have_text("cancelled", timeout=120_000)
            wait_finished(page, lab, "03_comparison_grid")
            assert Store(lab.root).get(grid).status is Status.CANCELLED
            expect(page.locator(f"{NB} .jp-OutputArea-output").filter(
                has_text="cancelled from the panel")).to_have_count(1)
            assert not stderr_outputs(page), stderr_outputs(page)
            assert not clipped_parts(page), clipped_parts(page)
            shot(page, grid_panel, "03-grid-cancelled.png")
            save(page, lab, "03_comparison_grid")
            lab.shutdown("03_comparison_grid", cookies)
            timings["03"] = time.monotonic() - t0

            # reopened after its kernel is gone: the dashboard's snapshot shows what it showed
            saved = json.loads((lab.nbdir / "00_quickstart.ipynb").read_text())
            html_outputs = [o["data"]["text/html"] for c in saved["cells"]
                            for o in c.get("outputs", []) if "text/html" in o.get("data", {})]
            snap = next(h for h in html_outputs if "wb-snapshot" in "".join(h))
            assert first in "".join(snap) and long_id in "".join(snap)
            page.goto(f"{lab.url}/lab/tree/00_quickstart.ipynb?reset")  # only this tab
            page.wait_for_selector(f"{NB} .jp-Notebook", timeout=60_000)
            lab.shutdown("00_quickstart", cookies)  # whatever kernel it started: not the jobs'
            page.goto(f"{lab.url}/lab/tree/00_quickstart.ipynb?reset")
            page.wait_for_selector(f"{NB} .wb-snapshot", timeout=60_000)
            snapshots = page.locator(f"{NB} .wb-snapshot")
            expect(snapshots.first).to_be_visible()
            text = " ".join(snapshots.all_inner_texts())
            for part in (first, long_id, "completed", "cancelled", "8/8", "Re-attach"):
                assert part in text, (part, text[:2000])
            assert not page.locator(f"{NB} .jp-OutputArea-output:visible").filter(
                has_text="Error displaying widget").count()
            snapshots.first.scroll_into_view_if_needed()
            shot(page, None, "00-reopened-without-kernel.png")
        except BaseException:
            page.screenshot(path=str(ARTIFACTS / "failure.png"))
            raise
        finally:
            browser.close()
    (ARTIFACTS / "timings.json").write_text(json.dumps(timings, indent=1))
