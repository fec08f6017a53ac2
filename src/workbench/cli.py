"""`workbench` command: jobs, status, wait, cancel, resume, worker, purge, doctor (and more per kind).

Human output by default, `--json` for scripts.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
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


ENGINES = ("vllm", "openai", "ray")


def _common(top: bool) -> argparse.ArgumentParser:
    """--root and --json, accepted before or after the subcommand.

    Subparsers get the same flags with SUPPRESS defaults, so a flag given before the
    subcommand is not overwritten by the subparser's default when it is not repeated.
    """
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--root", default=None if top else argparse.SUPPRESS,
                   help="store folder (default $WORKBENCH_ROOT or data/wb)")
    p.add_argument("--json", action="store_true", default=False if top else argparse.SUPPRESS,
                   help="machine-readable output")
    return p


def build_parser() -> argparse.ArgumentParser:
    common = _common(top=False)
    p = argparse.ArgumentParser(prog="workbench", description=__doc__, parents=[_common(top=True)])
    sub = p.add_subparsers(dest="cmd", required=True)

    def cmd(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, parents=[common])

    j = cmd("jobs", "list jobs (newest last)")
    j.add_argument("--kind", default=None, help="only this kind (batch, phased, grid, ...)")
    j.add_argument("--status", default=None, help="only this status (queued, completed, ...)")
    for name in ("status", "wait", "cancel", "resume"):
        sp = cmd(name, f"{name} one job")
        sp.add_argument("job_id")
        if name == "wait":
            sp.add_argument("--timeout", type=float, default=None)
    w = cmd("worker", "run a worker until stopped")
    w.add_argument("--plugin", action="append", default=[], help="module registering job kinds")
    w.add_argument("--kind", action="append", default=None, help="only run these kinds")
    w.add_argument("--exit-when-idle", action="store_true")
    pg = cmd("purge", "remove files of finished jobs older than the retention")
    pg.add_argument("--days", type=float, default=None)
    s = cmd("submit", "submit an OpenAI Batch JSONL file (validated whole, then queued)")
    s.add_argument("path")
    s.add_argument("--model", action="append", default=None, metavar="[NAME=]MODEL",
                   help="the model (folder or id); repeat NAME=MODEL to serve several by "
                        "name, lines then run on the one their body.model names")
    s.add_argument("--window", type=int, default=None, help="requests in flight")
    s.add_argument("--engine", choices=ENGINES, default=None,
                   help="vllm (in-process, default), openai (an OpenAI-compatible server), "
                        "ray (vLLM replicas on Ray)")
    s.add_argument("--base-url", default=None, help="--engine openai: the server's /v1 URL")
    s.add_argument("--api-key-env", default=None, metavar="VAR",
                   help="--engine openai: the NAME of the variable holding the key")
    s.add_argument("--replicas", type=int, default=None, help="--engine ray: vLLM replicas")
    s.add_argument("--completion-window", default=None, metavar="WINDOW",
                   help="deadline like OpenAI's (24h, 90m, 30s): what has not run by then "
                        "expires")
    s.add_argument("--media-dir", action="append", default=None, metavar="DIR",
                   help="a folder /v1/audio lines may read files from (repeatable)")
    s.add_argument("-q", "--quiet", action="store_true", help="print only the job id")
    sv = cmd("serve", "OpenAI-compatible batch API (and the jobs API) over this store")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=int(os.environ.get("WORKBENCH_PORT", 4080)),
                    help="default $WORKBENCH_PORT or 4080")
    sv.add_argument("--no-worker", action="store_true", help="do not start a worker thread")
    sv.add_argument("--model", action="append", default=None, metavar="NAME=MODEL",
                    help="serve MODEL (folder or HF id) as NAME; repeat for more (the first is"
                         " the default); a bare MODEL is named after its folder")
    sv.add_argument("--window", type=int, default=5000, help="requests in flight per job")
    sv.add_argument("--webhook", action="append", default=[], metavar="URL",
                    help="POST every batch/job event here, signed with $WORKBENCH_WEBHOOK_SECRET"
                         " (repeatable; http(s) only)")
    sv.add_argument("--media-dir", action="append", default=None, metavar="DIR",
                    help="a folder whose files /v1/audio batch lines may name by path "
                         "(repeatable; audio sent as a data: URL needs none)")
    wh = cmd("webhooks", "webhook deliveries: delivered, or failing with the last error")
    wh.add_argument("--state", choices=("pending", "delivered", "failed"), default=None)
    dr = cmd("doctor", "what this machine will run (device, builds, engine arguments), each "
                       "problem with its fix")
    dr.add_argument("--run", action="store_true",
                    help="self-test: a 20-request batch job and a 2-recording phased job here")
    k = cmd("keys", "API keys for `workbench serve` (on the store; see server/keys.py)")
    ks = k.add_subparsers(dest="keys_cmd", required=True)
    kc = ks.add_parser("create", help="mint a key; it is printed once", parents=[common])
    kc.add_argument("--name", required=True, help="who holds it (an app's name)")
    kc.add_argument("--read-only", action="store_true", help="list and read, nothing else")
    kc.add_argument("-q", "--quiet", action="store_true", help="print only the key")
    ks.add_parser("list", help="every key (never the key itself)", parents=[common])
    ks.add_parser("revoke", help="refuse a key from now on", parents=[common]).add_argument(
        "key", metavar="ID_OR_NAME")
    return p


def _engine(p: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any] | None:
    """`submit`'s engine flags → the `engine=` dict of wb.batch.submit (--base-url alone
    means --engine openai)."""
    if args.engine is None and args.base_url:
        args.engine = "openai"
    if args.engine is None and any(v is not None for v in (args.api_key_env, args.replicas)):
        p.error("--api-key-env goes with --engine openai, --replicas with --engine ray")
    if args.engine is None:
        return None
    eng: dict[str, Any] = {"provider": args.engine}
    if args.engine != "openai" and (args.base_url or args.api_key_env):
        p.error("--base-url and --api-key-env go with --engine openai")
    if args.engine != "ray" and args.replicas is not None:
        p.error("--replicas goes with --engine ray")
    for k in ("base_url", "api_key_env", "replicas"):
        if getattr(args, k) is not None:
            eng[k] = getattr(args, k)
    return eng


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cmd == "submit":
        args.engine_spec = _engine(parser, args)
    for d in getattr(args, "media_dir", None) or ():
        if not Path(d).expanduser().is_dir():
            parser.error(f"--media-dir {d}: no such folder")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        return _dispatch(args)
    except (WorkbenchError, ValueError) as e:
        if args.json:
            print(json.dumps({"error": type(e).__name__, "message": str(e)}))
        else:
            print(f"error: {e}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    if args.cmd == "doctor":  # reads the machine; opens no store unless --run (a temporary one)
        from workbench.doctor.report import main as doctor

        return doctor(args.root, args.json, args.run)
    wb = Workbench(args.root)
    if args.cmd in ("jobs", "status", "wait"):
        wb.batch.expire_overdue()  # a batch past its completion window reads `expired`
    if args.cmd == "jobs":
        rows = wb.store.list_jobs(kind=args.kind, status=args.status)
        if args.json:
            _print([_row_dict(r) for r in rows], True)
        else:
            print(wb.jobs(kind=args.kind, status=args.status).to_string(index=False)
                  if rows else "no jobs")
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
        opts: dict[str, Any] = {"engine": args.engine_spec, "media_dir": args.media_dir,
                                "completion_window": args.completion_window}
        if args.window:
            opts["window"] = args.window
        named = [m for m in args.model or () if "=" in m]
        if named:
            from workbench.server.served import Served

            opts["models"] = Served(args.model).models
        elif args.model:
            opts["model"] = args.model[-1]
        job = wb.batch.submit(args.path, **opts)
        if args.quiet:
            print(job.id)
        else:
            _print({"job": job.id, "status": job.status, "total": job.info.total}, args.json)
    elif args.cmd == "serve":
        from workbench.server.app import serve

        serve(wb, host=args.host, port=args.port, worker=not args.no_worker,
              models=args.model, window=args.window, webhooks=args.webhook,
              media_dirs=args.media_dir)
    elif args.cmd == "keys":
        from workbench.server.keys_cli import run_keys

        return run_keys(wb, args)
    elif args.cmd == "webhooks":
        from workbench.server.webhook_list import print_deliveries

        print_deliveries(wb.store, args.state, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
