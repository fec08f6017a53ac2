"""`workbench` command: jobs, status, wait, cancel, resume, worker, purge (and more per kind).

Human output by default, `--json` for scripts.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from workbench.api import Workbench
from workbench.errors import WorkbenchError
from workbench.runtime import registry
from workbench.runtime.worker import Worker


def _row_dict(r: Any) -> dict[str, Any]:
    return r.model_dump(mode="json")


def _print(obj: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(obj, indent=2, default=str))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            print(f"{k:>12}: {v}")
    else:
        print(obj)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="workbench", description=__doc__)
    p.add_argument("--root", default=None, help="store folder (default $WORKBENCH_ROOT or data/wb)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("jobs", help="list jobs")
    for name in ("status", "wait", "cancel", "resume"):
        sp = sub.add_parser(name, help=f"{name} one job")
        sp.add_argument("job_id")
        if name == "wait":
            sp.add_argument("--timeout", type=float, default=None)
    w = sub.add_parser("worker", help="run a worker until stopped")
    w.add_argument("--plugin", action="append", default=[], help="module registering job kinds")
    w.add_argument("--kind", action="append", default=None, help="only run these kinds")
    w.add_argument("--exit-when-idle", action="store_true")
    pg = sub.add_parser("purge", help="remove files of finished jobs older than the retention")
    pg.add_argument("--days", type=float, default=None)
    s = sub.add_parser("submit", help="submit an OpenAI Batch JSONL file (local vLLM or a server)")
    s.add_argument("path")
    s.add_argument("--model", default=None)
    s.add_argument("--window", type=int, default=None)
    s.add_argument("--engine", choices=["vllm", "openai"], default=None,
                   help="vllm (in-process, default) or openai (an OpenAI-compatible server)")
    s.add_argument("--base-url", default=None, help="the server for --engine openai")
    s.add_argument("--api-key-env", default=None,
                   help="name of the environment variable holding the server's API key")
    sv = sub.add_parser("serve", help="OpenAI-compatible batch API over this store")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=4080)
    sv.add_argument("--no-worker", action="store_true", help="do not start a worker thread")
    sv.add_argument("--model", default=None, help="model for every batch (default $WORKBENCH_MODEL)")
    sv.add_argument("--window", type=int, default=5000, help="requests in flight per job")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        return _dispatch(args)
    except WorkbenchError as e:
        if args.json:
            print(json.dumps({"error": type(e).__name__, "message": str(e)}))
        else:
            print(f"error: {e}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    wb = Workbench(args.root)
    if args.cmd == "jobs":
        rows = wb.store.list_jobs()
        if args.json:
            _print([_row_dict(r) for r in rows], True)
        else:
            print(wb.jobs().to_string(index=False) if rows else "no jobs")
    elif args.cmd == "status":
        _print(_row_dict(wb.job(args.job_id).info), args.json)
    elif args.cmd == "wait":
        job = wb.job(args.job_id).wait(timeout=args.timeout, progress=not args.json)
        _print(_row_dict(job.info), args.json)
        return 0 if job.status == "completed" else 1
    elif args.cmd == "cancel":
        _print(_row_dict(wb.job(args.job_id).cancel().info), args.json)
    elif args.cmd == "resume":
        _print(_row_dict(wb.job(args.job_id).resume().info), args.json)
    elif args.cmd == "worker":
        registry.load_plugins(args.plugin)
        worker = Worker(wb.store, kinds=args.kind, timing=wb.timing)
        worker.run_forever(exit_when_idle=args.exit_when_idle)
    elif args.cmd == "purge":
        _print({"purged": wb.purge(args.days)}, args.json)
    elif args.cmd == "submit":
        spec: dict[str, Any] = {}
        if args.window:
            spec["window"] = args.window
        provider = args.engine or ("openai" if args.base_url else None)
        engine = {k: v for k, v in (("provider", provider), ("base_url", args.base_url),
                                    ("api_key_env", args.api_key_env)) if v}
        if engine:
            spec["engine"] = engine
        job = wb.batch.submit(args.path, model=args.model, **spec)
        _print({"job": job.id, "status": job.status, "total": job.info.total}, args.json)
    elif args.cmd == "serve":
        from workbench.server.app import serve

        serve(wb, host=args.host, port=args.port, worker=not args.no_worker, model=args.model,
              window=args.window)
    return 0


if __name__ == "__main__":
    sys.exit(main())
