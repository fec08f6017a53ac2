"""API keys with owners and scopes: who is calling, and what they may see.

The admin key (`WORKBENCH_API_KEY`, from the environment only) mints keys for apps
(`workbench keys create --name scorer-app [--read-only]`, or `POST /v1/keys`). A minted
key sees only the files, batches and jobs made with it: another key's ids answer 404, as
unknown ids do, so ids never leak. A read-only key may read, never create, cancel or
delete. The admin sees everything (and what notebooks submit, which has no owner).

Storage: only `HMAC-SHA256(salt, token)` with a random 16-byte salt per key. A fast
keyed hash, not scrypt/pbkdf2, on purpose: a token carries 256 random bits
(`secrets.token_urlsafe(32)`), so there is nothing for a slow KDF to protect against
(no dictionary, no brute force), while every request is verified (apps poll several
times a second on a 2-core machine; scrypt would cost tens of ms each). The token
starts with its key's id (`wbk_<12 hex>_<secret>`) so a request looks up one row and
compares one digest in constant time. The token is shown once, at creation; lost means
revoke and mint another. Revocation is read from the store on every request, so a key
revoked by the CLI on the same store is refused at once by a running server.

Tables live in this component's own migration list (`api_keys`, `api_key_objects`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass

from pydantic import BaseModel

from workbench.errors import WorkbenchError
from workbench.store import Store

COMPONENT = "keys"
MIGRATIONS = [
    """
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        read_only INTEGER NOT NULL DEFAULT 0,
        salt BLOB NOT NULL,
        digest BLOB NOT NULL,
        created_at REAL NOT NULL,
        revoked_at REAL
    );
    CREATE UNIQUE INDEX api_keys_active_name ON api_keys(name) WHERE revoked_at IS NULL;
    CREATE TABLE api_key_objects (
        object_id TEXT PRIMARY KEY,
        key_id TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX api_key_objects_key ON api_key_objects(key_id, object_id);
    """,
]

PREFIX = "wbk_"
TOKEN = re.compile(r"wbk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class KeyProblem(WorkbenchError):
    """A key command that cannot be done (a bad or taken name)."""


class KeyNotFound(KeyProblem):
    """No key with that id (or active key with that name)."""


@dataclass(frozen=True)
class Caller:
    """Who a request comes from: the admin (`key_id` None) or one minted key."""

    key_id: str | None
    name: str
    read_only: bool = False

    @property
    def admin(self) -> bool:
        return self.key_id is None


ADMIN = Caller(None, "admin")


class KeyInfo(BaseModel):
    """A key as listed: never its token, never its digest."""

    id: str
    object: str = "api_key"
    name: str
    read_only: bool
    created_at: int
    revoked_at: int | None = None


class KeyCreated(KeyInfo):
    """The one answer that carries the token: store it now, it is not kept."""

    key: str


def _digest(salt: bytes, token: str) -> bytes:
    return hmac.new(salt, token.encode(), hashlib.sha256).digest()


def _info(r: sqlite3.Row) -> KeyInfo:
    return KeyInfo(id=r["id"], name=r["name"], read_only=bool(r["read_only"]),
                   created_at=int(r["created_at"]),
                   revoked_at=int(r["revoked_at"]) if r["revoked_at"] else None)


class KeyStore:
    """The keys of one store root, and which objects each key made."""

    def __init__(self, store: Store) -> None:
        self.store = store
        store.ensure_tables(COMPONENT, MIGRATIONS)

    @property
    def db(self) -> sqlite3.Connection:
        return self.store.conn

    # -- admin: mint, list, revoke -------------------------------------------------------
    def create(self, name: str, read_only: bool = False) -> KeyCreated:
        """A new key; the answer holds the token, which is stored only as a salted hash."""
        if not NAME.fullmatch(name or ""):
            raise KeyProblem(f"key name {name[:80]!r}: use 1 to 64 letters, digits, '.', '_' "
                            "or '-', starting with a letter or digit")
        for _ in range(5):  # a 48-bit id collides practically never; retry if it does
            hex_id = secrets.token_hex(6)
            token = f"{PREFIX}{hex_id}_{secrets.token_urlsafe(32)}"
            salt = secrets.token_bytes(16)
            now = time.time()
            try:
                with self.store.transaction() as c:
                    if c.execute("SELECT 1 FROM api_keys WHERE name=? AND revoked_at IS NULL",
                                 (name,)).fetchone():
                        raise KeyProblem(f"a key named {name!r} exists already: revoke it first "
                                        "or choose another name")
                    c.execute("INSERT INTO api_keys (id, name, read_only, salt, digest,"
                              " created_at) VALUES (?,?,?,?,?,?)",
                              (f"key_{hex_id}", name, int(read_only), salt,
                               _digest(salt, token), now))
            except sqlite3.IntegrityError:
                continue
            return KeyCreated(id=f"key_{hex_id}", name=name, read_only=read_only,
                              created_at=int(now), key=token)
        raise KeyProblem("could not draw a fresh key id; try again")

    def list(self) -> list[KeyInfo]:
        """Every key, oldest first; revoked ones stay listed (with `revoked_at`)."""
        return [_info(r) for r in self.db.execute(
            "SELECT * FROM api_keys ORDER BY created_at, id")]

    def find(self, id_or_name: str) -> KeyInfo:
        """A key by its id, or by the name of an active key."""
        r = self.db.execute("SELECT * FROM api_keys WHERE id=?", (id_or_name,)).fetchone()
        if r is None:
            r = self.db.execute("SELECT * FROM api_keys WHERE name=? AND revoked_at IS NULL",
                                (id_or_name,)).fetchone()
        if r is None:
            known = ", ".join(f"{k.id} ({k.name})" for k in self.list() if k.revoked_at is None)
            raise KeyNotFound(f"no key {id_or_name[:80]!r}; active keys: {known or 'none'}")
        return _info(r)

    def revoke(self, id_or_name: str) -> KeyInfo:
        """Refused from the next request on (running servers read it from the store)."""
        key = self.find(id_or_name)
        self.db.execute("UPDATE api_keys SET revoked_at=? WHERE id=? AND revoked_at IS NULL",
                        (time.time(), key.id))
        return self.find(key.id)

    # -- requests: who is it, what may they see -------------------------------------------
    def verify(self, token: str) -> Caller | None:
        """The caller a `wbk_...` token stands for; None when unknown, wrong or revoked."""
        m = TOKEN.fullmatch(token)
        if m is None:
            return None
        r = self.db.execute("SELECT name, read_only, salt, digest, revoked_at FROM api_keys"
                            " WHERE id=?", (f"key_{m.group(1)}",)).fetchone()
        if r is None or r["revoked_at"] is not None:
            return None
        if not hmac.compare_digest(_digest(r["salt"], token), r["digest"]):
            return None
        return Caller(f"key_{m.group(1)}", r["name"], bool(r["read_only"]))

    def own(self, caller: Caller, object_id: str) -> None:
        """Record that `caller` made `object_id` (the admin's objects have no owner row)."""
        if caller.key_id is not None:
            self.db.execute("INSERT OR IGNORE INTO api_key_objects (object_id, key_id,"
                            " created_at) VALUES (?,?,?)", (object_id, caller.key_id, time.time()))

    def sees(self, caller: Caller, object_id: str) -> bool:
        """The admin sees everything; a key only what it made."""
        if caller.key_id is None:
            return True
        return self.db.execute("SELECT 1 FROM api_key_objects WHERE object_id=? AND key_id=?",
                               (object_id, caller.key_id)).fetchone() is not None

    def owned(self, caller: Caller) -> set[str] | None:
        """The ids a key made (None for the admin: no filter)."""
        if caller.key_id is None:
            return None
        return {r[0] for r in self.db.execute(
            "SELECT object_id FROM api_key_objects WHERE key_id=?", (caller.key_id,))}


def owned_sql(caller: Caller, column: str) -> tuple[str, list[str]]:
    """(" AND column IN (the key's objects)", [key_id]) to filter a list; ("", []) for the
    admin."""
    if caller.key_id is None:
        return "", []
    return (f" AND {column} IN (SELECT object_id FROM api_key_objects WHERE key_id=?)",
            [caller.key_id])
