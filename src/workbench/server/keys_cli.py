"""`workbench keys create|list|revoke`: the admin's key commands, run on the store directly
(no server needed; a running server sees a new or revoked key on its next request).

The key itself is printed once, by `create`, and never stored: `--quiet` prints only
the key (for `export APP_KEY="$(workbench keys create --name app --quiet)"`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json

from workbench.api import Workbench
from workbench.server.keys import KeyInfo, KeyStore


def _when(ts: int | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "-"


def _scope(k: KeyInfo) -> str:
    return "read-only" if k.read_only else "read-write"


def run_keys(wb: Workbench, args: argparse.Namespace) -> int:
    keys = KeyStore(wb.store)
    if args.keys_cmd == "create":
        made = keys.create(args.name, read_only=args.read_only)
        if args.quiet:
            print(made.key)
        elif args.json:
            print(json.dumps(made.model_dump(), indent=2))
        else:
            print(f"{made.id}  {made.name}  {_scope(made)}\n{made.key}\n"
                  "(shown this once: store it now; the store keeps only a salted hash)")
    elif args.keys_cmd == "list":
        listed = keys.list()
        if args.json:
            print(json.dumps([k.model_dump() for k in listed], indent=2))
        elif not listed:
            print("no keys")
        else:
            print(f"{'id':<17} {'name':<24} {'scope':<10} {'created':<16} revoked")
            for k in listed:
                print(f"{k.id:<17} {k.name:<24} {_scope(k):<10} {_when(k.created_at):<16} "
                      f"{_when(k.revoked_at)}")
    else:
        gone = keys.revoke(args.key)
        print(json.dumps(gone.model_dump(), indent=2) if args.json
              else f"revoked {gone.id} ({gone.name}): refused from the next request on")
    return 0
