"""`workbench doctor [--json] [--run]`: one screen of facts and problems, or JSON of both.

The JSON is the `Report` model dumped, so `Report.model_validate_json(output)` gives the
same report back (a script can read it with the same types).
"""

from __future__ import annotations

import json
import os
from typing import Any

from pydantic import BaseModel

from workbench.doctor import facts as facts_mod
from workbench.doctor.facts import Facts
from workbench.doctor.problems import Problem, find

GB = 1e9


class Report(BaseModel):
    facts: Facts
    problems: list[Problem]


def build(root: str | os.PathLike[str] | None = None) -> Report:
    f = facts_mod.gather(root)
    return Report(facts=f, problems=find(f))


def _args(d: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items() if not isinstance(v, dict))


def device_line(f: Facts) -> str:
    """One line: the device jobs run on and the builds that run them (`make demo` prints it)."""
    b = f.builds
    if f.devices.gpus:
        g = f.devices.gpus[0]
        dev = f"GPU {g.name} ({g.memory_total_mib:,} MiB, {g.memory_free_mib:,} free)"
        if len(f.devices.gpus) > 1:
            dev += f" + {len(f.devices.gpus) - 1} more"
    else:
        dev = f"CPU, {f.cpus} cores, {f.ram_total_bytes / GB:.1f} GB RAM"
    runs = "GPU" if f.vllm_on_gpu else "CPU"
    return (f"Device: {dev}; vLLM {b.vllm_dist or 'not installed'} {b.vllm_version or ''}".rstrip()
            + f", torch {b.torch_version}: jobs run on the {runs}")


def print_device_line() -> None:
    """`make demo`'s first lines: the device line, then each install problem with its fix."""
    r = build()
    print(device_line(r.facts))
    for p in r.problems:
        print(f"PROBLEM: {p.what}\n    fix: {p.fix}")
    print(flush=True)


def text(r: Report) -> str:
    f, b, d = r.facts, r.facts.builds, r.facts.devices
    lines = [f"workbench doctor: {f.host}", "",
             f"  {'device':<13} {device_line(f).removeprefix('Device: ')}",
             f"  {'CPU / RAM':<13} {f.cpus} cores; {f.ram_total_bytes / GB:.1f} GB RAM, "
             f"{f.ram_available_bytes / GB:.1f} GB available"]
    if d.gpus:
        for g in d.gpus:
            lines.append(f"  {f'GPU {g.index}':<13} {g.name}: {g.memory_total_mib:,} MiB total, "
                         f"{g.memory_free_mib:,} MiB free")
        lines.append(f"  {'driver':<13} {d.driver}, supports CUDA {d.cuda_driver or '?'}")
    else:
        lines.append(f"  {'GPU':<13} none (nvidia-smi: {d.nvidia_smi})")
    cuda = f"built for CUDA {b.torch_cuda}" if b.torch_cuda else "CPU build"
    lines += [
        f"  {'install set':<13} {f.install_set} ({f.install_set_why}); make env installs this",
        f"  {'vLLM':<13} {b.vllm_dist or 'not installed'} {b.vllm_version or ''}".rstrip(),
        f"  {'torch':<13} {b.torch_version or 'not installed'} ({cuda}; sees a GPU: "
        f"{'yes' if b.torch_sees_gpu else 'no'})",
        f"  {'CTranslate2':<13} {b.ctranslate2_version or 'not installed'} (CUDA devices: "
        f"{b.ctranslate2_cuda_devices}; cuBLAS/cuDNN for CUDA 12: "
        f"{', '.join(b.whisper_cuda_libraries) or 'none'})",
        f"  {'batch engine':<13} vLLM on the {'GPU' if f.vllm_on_gpu else 'CPU'}: "
        f"{_args(f.vllm_args)}" + (f"; {_args(f.vllm_env)}" if f.vllm_env else ""),
        f"  {'Whisper':<13} {_args(f.whisper_args)}",
        f"  {'Ray':<13} {b.ray_version or 'not installed'}: "
        f"{('cluster at ' + f.ray_address) if f.ray_address else 'local, started per job'}; "
        f"auth: {f.ray_auth}",
        f"  {'store':<13} {f.store_root}: {f.store_free_bytes / GB:.1f} GB free of "
        f"{f.store_total_bytes / GB:.1f} GB",
        f"  {'queue limits':<13} {f.limits['max_requests_per_job']:,} requests per job, "
        f"{f.limits['max_queued_jobs']} queued jobs, {f.limits['max_queued_requests']:,} "
        f"queued requests; files kept {f.limits['retention_days']:g} days",
        ""]
    if not r.problems:
        lines.append("No problems found.")
    for p in r.problems:
        lines += [f"PROBLEM: {p.what}", f"    fix: {p.fix}"]
    return "\n".join(lines)


def main(root: str | None, as_json: bool, run: bool) -> int:
    """The CLI's `doctor`: exit 0 when no problem (and, with --run, every step passed)."""
    r = build(root)
    if run:
        from workbench.doctor.selftest import run_all

        steps = run_all(r.facts, echo=not as_json)
        if as_json:
            print(json.dumps({"report": r.model_dump(mode="json"),
                              "steps": [s.model_dump(mode="json") for s in steps]}, indent=2))
        return 0 if all(s.passed for s in steps) and not r.problems else 1
    print(r.model_dump_json(indent=2) if as_json else text(r))
    return 1 if r.problems else 0
