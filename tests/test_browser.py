"""JupyterLab in a real browser: run 00_quickstart, watch the dashboard, click Cancel.

Debian's chromium driven by Python playwright (no browser download). JupyterLab runs on
127.0.0.1 with a throw-away settings dir (news popup off) on a *copy* of the notebook, so
Lab's autosave never writes outputs into the repository. The kernel uses a tiny local
model through `WORKBENCH_MODEL` and a temporary store through `WORKBENCH_ROOT`, which the
test also opens to find the jobs' ids and check their final statuses.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO
from workbench.store import Status, Store

pytestmark = [pytest.mark.browser, pytest.mark.vllm]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = REPO / "artifacts" / "browser"
OVERRIDES = {
    "@jupyterlab/apputils-extension:notification": {"checkForUpdates": False,
                                                    "fetchNews": "false"},
    # render every cell (no virtual scrolling) so widgets far down the page exist in the DOM
    "@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"},
}


@dataclass
class Lab:
    url: str
    root: Path  # the workbench store the kernel uses
    proc: subprocess.Popen[bytes]
    log: Path


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
    shutil.copy(REPO / "notebooks" / "00_quickstart.ipynb", nbdir)
    settings = tmp_path / "lab-settings"
    settings.mkdir()
    (settings / "overrides.json").write_text(json.dumps(OVERRIDES))
    root = tmp_path / "wb"
    env = dict(os.environ)
    env.update(
        WORKBENCH_ROOT=str(root), WORKBENCH_MODEL=str(tiny_llama), HF_HUB_OFFLINE="1",
        WB_NB_ROWS="8", WB_NB_LONG_ROWS="4000", WB_NB_MAX_TOKENS="32", WB_NB_WAIT_S="300",
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
        yield Lab(url, root, proc, log)
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


def _until(pred, timeout: float, what: str, log: Path | None = None,  # type: ignore[no-untyped-def]
           stop=None) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        if stop is not None and stop():
            break
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


def _kernel_idle(lab: Lab) -> bool:
    r = _get(f"{lab.url}/api/sessions")
    return bool(r and r.json() and r.json()[0]["kernel"]["execution_state"] == "idle")


def _batch_ids(store: Store) -> list[str]:
    return [r.id for r in store.list_jobs(kind="batch")]


def test_quickstart_dashboard_completes_and_cancel_click(lab: Lab) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1700, "height": 1100})
        try:
            page.goto(f"{lab.url}/lab/tree/00_quickstart.ipynb")
            page.wait_for_selector(".jp-NotebookPanel .jp-Notebook", timeout=60_000)
            _until(lambda: _kernel_idle(lab), 60, "the kernel to be idle", lab.log)
            page.click(".jp-NotebookPanel .jp-Notebook")  # focus, else Run All does nothing
            page.click(".lm-MenuBar-itemLabel:text-is('Run')")
            page.click("li[data-command='runmenu:run-all']")

            _until(lambda: lab.root.joinpath("workbench.db").exists()
                   and len(_batch_ids(Store(lab.root))) >= 1, 120, "the first job", lab.log)
            store = Store(lab.root)
            first = _batch_ids(store)[0]
            dash = page.locator(".wb-dashboard")
            expect(dash.locator(f".wb-job-{first} .wb-badge")).to_have_text(
                "completed", timeout=180_000)
            expect(dash.locator(f".wb-job-{first} .progress-bar").first).to_be_visible()

            _until(lambda: len(_batch_ids(store)) >= 2, 60, "the longer job", lab.log)
            long_id = _batch_ids(store)[1]
            long_badge = dash.locator(f".wb-job-{long_id} .wb-badge")
            expect(long_badge).to_have_text("in progress", timeout=60_000)
            dash.locator(f".wb-job-{long_id} button.wb-cancel").click()
            expect(long_badge).to_have_text("cancelled", timeout=60_000)

            row = store.get(long_id)
            assert row.status is Status.CANCELLED, row
            assert row.completed < row.total == 4000
            assert store.get(first).status is Status.COMPLETED
            # the last cell ran after the wait returned: the notebook went top to bottom
            expect(page.locator(".jp-OutputArea-output").filter(
                has_text="requests answered and kept")).to_have_count(1, timeout=60_000)
            expect(dash.locator(f".wb-job-{long_id} button.wb-resume")).to_be_enabled()
            panel = page.locator(f".wb-panel-batch:has(.wb-job-{first})")
            expect(panel.locator(".wb-preview")).to_contain_text("newest 8 of 8 results")
            expect(panel.locator(".wb-batch-speed")).to_contain_text("tok/s")
            panel.scroll_into_view_if_needed()
            panel.screenshot(path=str(ARTIFACTS / "quickstart-panel.png"))
            dash.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "quickstart-dashboard.png"))
        except BaseException:
            page.screenshot(path=str(ARTIFACTS / "quickstart-failure.png"))
            raise
        finally:
            browser.close()
