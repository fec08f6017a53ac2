"""Sending the outbox (`server.webhooks`): Standard Webhooks signatures, retries, a thread.

Each attempt is a POST of the delivery's stored body with the headers OpenAI sends:

    webhook-id: msg_...            (the same on every retry of this delivery)
    webhook-timestamp: <unix s>    (this attempt's time)
    webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">

keyed by the secret's bytes: the base64 after `whsec_` (as `OpenAI(webhook_secret=...)
.webhooks.unwrap()` decodes it), or the text itself for a secret without that prefix.
Only a 2xx answer counts as delivered. Anything else (an error status, a refused
connection, a timeout) is retried with exponential backoff and jitter — `backoff_s`
doubling up to `max_backoff_s` — until `give_up_s` after the event; the schedule lives in
the store (`next_at`), so a restarted server goes on where the killed one stopped.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import random
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from workbench.api import Workbench
from workbench.server import webhooks
from workbench.server.webhooks import Delivery

log = logging.getLogger("workbench.webhooks")
SECRET_ENV = "WORKBENCH_WEBHOOK_SECRET"


class WebhookConfigError(ValueError):
    """A --webhook URL or the secret is not usable (said in words)."""


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or not parts.hostname:
        raise WebhookConfigError(f"--webhook {url!r}: only http:// and https:// URLs with a host"
                                 " are accepted (for example https://example.org/hooks)")
    return url


def secret_key(secret: str) -> bytes:
    """The HMAC key, decoded exactly as the openai SDK decodes it."""
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[6:], validate=True)
        except ValueError:
            raise WebhookConfigError(f"{SECRET_ENV}: the part after 'whsec_' is not base64"
                                     ) from None
    return secret.encode()


def sign(key: bytes, webhook_id: str, timestamp: int, body: str) -> str:
    mac = hmac.new(key, f"{webhook_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


@dataclass
class Settings:
    urls: list[str]
    secret: str
    backoff_s: float = 1.0
    max_backoff_s: float = 300.0
    give_up_s: float = 72 * 3600.0
    timeout_s: float = 10.0
    poll_s: float = 0.5
    key: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.secret:
            raise WebhookConfigError(
                f"--webhook needs a signing secret in {SECRET_ENV} (for example 'whsec_' + 32"
                " random bytes in base64); receivers verify with the same secret")
        self.urls = [check_url(u) for u in dict.fromkeys(self.urls)]
        self.key = secret_key(self.secret)

    @classmethod
    def from_env(cls, urls: list[str]) -> Settings:
        env = os.environ
        return cls(urls=list(urls), secret=env.get(SECRET_ENV, ""),
                   backoff_s=float(env.get("WORKBENCH_WEBHOOK_BACKOFF_S", 1.0)),
                   max_backoff_s=float(env.get("WORKBENCH_WEBHOOK_MAX_BACKOFF_S", 300.0)),
                   give_up_s=float(env.get("WORKBENCH_WEBHOOK_GIVE_UP_S", 72 * 3600.0)))

    def delay(self, attempts: int) -> float:
        """Wait before attempt `attempts + 1`: exponential from backoff_s, capped, ±20 %."""
        base = min(self.max_backoff_s, self.backoff_s * 2 ** max(0, attempts - 1))
        return base * random.uniform(0.8, 1.2)


def attempt(client: httpx.Client, s: Settings, d: Delivery) -> tuple[bool, int | None, str | None]:
    """One POST; (delivered, HTTP status or None, error in words or None)."""
    ts = int(time.time())
    headers = {"content-type": "application/json", "user-agent": "workbench-webhooks/1",
               "webhook-id": d.webhook_id, "webhook-timestamp": str(ts),
               "webhook-signature": sign(s.key, d.webhook_id, ts, d.body)}
    try:
        r = client.post(d.url, content=d.body.encode(), headers=headers)
    except httpx.ConnectError:
        return False, None, f"could not connect to {d.url} (connection refused or no route)"
    except httpx.TimeoutException:
        return False, None, f"no answer from {d.url} within {s.timeout_s:.0f} s"
    except httpx.HTTPError as e:
        return False, None, f"{d.url}: {type(e).__name__} {e}"
    if 200 <= r.status_code < 300:
        return True, r.status_code, None
    return False, r.status_code, f"HTTP {r.status_code} from {d.url}"


def run_once(wb: Workbench, s: Settings, client: httpx.Client) -> int:
    """Expire overdue batches, queue new events, send what is due; returns attempts made."""
    store = wb.store
    wb.batch.expire_overdue()  # a closed completion window is an event even if nobody polls
    webhooks.scan(store, s.urls)
    due = webhooks.claim_due(store, s.urls, lease_s=s.timeout_s + 5)
    for d in due:
        ok, status, error = attempt(client, s, d)
        now = time.time()
        next_at = None
        if not ok:
            nxt = now + s.delay(d.attempts + 1)
            next_at = nxt if nxt - d.created_at <= s.give_up_s else None
            log.warning("webhook %s (%s) to %s: %s", d.webhook_id, d.type, d.url, error)
        webhooks.record(store, d, ok=ok, status=status, error=error, next_at=next_at, now=now)
    return len(due)


class WebhookSender:
    """A daemon thread running `run_once` every `poll_s` until `stop()`."""

    def __init__(self, wb: Workbench, settings: Settings) -> None:
        self.wb, self.settings = wb, settings
        webhooks.ensure(wb.store)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="webhooks", daemon=True)

    def start(self) -> WebhookSender:
        self._thread.start()
        return self

    def stop(self, timeout: float = 15) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        s = self.settings
        with httpx.Client(timeout=s.timeout_s, follow_redirects=False) as client:
            while not self._stop.is_set():
                try:
                    run_once(self.wb, s, client)
                except Exception:  # a locked database, a disk hiccup: try again next round
                    log.exception("webhook round failed; retrying")
                self._stop.wait(s.poll_s)
