"""Each student's private link: an unguessable token per phased item, and its lookup.

The token is the only key to a student's page (`GET /s/<token>` on `workbench serve`), so
it is random (`secrets.token_urlsafe`, 192 bits: far beyond guessing, even at millions of
tries a second) and it lives next to the item in `phased_items.link`, where the lab's
tables show it. Revoking a link replaces the token: the old one then matches nothing and
its page answers "not found", the same as a token that never existed.

`link_url()` turns a token into what a teacher sends: `$WORKBENCH_PUBLIC_URL/s/<token>`
(default `http://127.0.0.1:$WORKBENCH_PORT`, the address `workbench serve` listens on).
"""

from __future__ import annotations

import os
import re
import secrets

from workbench.store import Store

#: bytes of randomness per token (192 bits; the brief asks for at least 128)
TOKEN_BYTES = 24
#: what a token looks like (base64url, no padding): anything else is not looked up at all
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{32}")
#: the phased migration that adds the column (appended to `phased.items.MIGRATIONS`)
LINK_MIGRATION = ("ALTER TABLE phased_items ADD COLUMN link TEXT;"
                  " CREATE UNIQUE INDEX phased_items_link ON phased_items(link)")


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def public_base() -> str:
    base = os.environ.get("WORKBENCH_PUBLIC_URL")
    if base:
        return base.rstrip("/")
    return f"http://127.0.0.1:{os.environ.get('WORKBENCH_PORT', '4080')}"


def link_url(token: str | None) -> str | None:
    return None if token is None else f"{public_base()}/s/{token}"


def fill_missing(store: Store) -> int:
    """Give a token to every item that has none (items created before links existed)."""
    rows = store.conn.execute(
        "SELECT job_id, item_id FROM phased_items WHERE link IS NULL").fetchall()
    if rows:
        with store.transaction() as c:
            c.executemany("UPDATE phased_items SET link=? WHERE job_id=? AND item_id=?"
                          " AND link IS NULL", [(new_token(), r[0], r[1]) for r in rows])
    return len(rows)


def find(store: Store, token: str) -> tuple[str, str] | None:
    """(job_id, item_id) of the item this token opens, or None (malformed, revoked, unknown)."""
    if not TOKEN_RE.fullmatch(token):
        return None
    r = store.conn.execute("SELECT job_id, item_id FROM phased_items WHERE link=?",
                           (token,)).fetchone()
    return None if r is None else (r[0], r[1])


def revoke(store: Store, job_id: str, item_id: str) -> str:
    """Replace an item's token; returns the new one (the old link is dead at once)."""
    token = new_token()
    cur = store.conn.execute("UPDATE phased_items SET link=? WHERE job_id=? AND item_id=?",
                             (token, job_id, item_id))
    if cur.rowcount != 1:
        raise KeyError(f"no recording {item_id!r} in job {job_id}")
    return token
