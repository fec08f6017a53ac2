"""`workbench webhooks`: every delivery with its state, in words or as JSON."""

from __future__ import annotations

import json
import time

from workbench.server.webhooks import deliveries, describe
from workbench.store import Store


def print_deliveries(store: Store, state: str | None, as_json: bool) -> None:
    rows = deliveries(store, state)
    now = time.time()
    if as_json:
        print(json.dumps([{**d.model_dump(exclude={"body"}), "event": json.loads(d.body),
                           "status": describe(d, now)} for d in rows], indent=2))
        return
    if not rows:
        print("no webhook deliveries")
        return
    for d in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.created_at))
        print(f"{when}  {d.webhook_id}  {d.type:<16} {d.subject}  → {d.url}  {describe(d, now)}")
