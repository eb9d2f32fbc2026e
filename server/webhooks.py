"""Webhook delivery of alerts: a JSON body signed with HMAC-SHA256 over ``<timestamp>.<body>``
(header ``Fairwatch-Signature: t=<unix>,v1=<hex>``, see docs/webhooks.md), one attempt per job,
failures retried with exponential backoff through the job table and dead-lettered at the end.

The job is a `PoolHandler`: it reads the delivery in one short transaction, makes the POST with no
transaction open and no pool connection held (a slow endpoint must not pin a connection, a row
lock and an open transaction for up to the timeout), then records the outcome in another. A
worker dying between the POST and the record makes the job run again: delivery is at least once,
and receivers deduplicate on ``Fairwatch-Delivery``."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import asyncpg
import httpx
import msgspec

from storage.jobs import ClaimedJob
from storage.risk_delivery import DeliveryAttempt, SubscriptionRepository

if TYPE_CHECKING:
    from server.worker import WorkerContext

__all__ = [
    "SIGNATURE_HEADER",
    "TIMEOUT_SECONDS",
    "deliver_webhook",
    "sign",
    "verify",
    "webhook_body",
]

_log = logging.getLogger("fairwatch.webhooks")
SIGNATURE_HEADER = "Fairwatch-Signature"
TIMEOUT_SECONDS = 10.0
DEFAULT_TOLERANCE_SECONDS = 300


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The header value for ``body`` sent at ``timestamp`` (seconds since the epoch)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(
    secret: str,
    header: str,
    body: bytes,
    *,
    now: int | None = None,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
) -> bool:
    """What a receiver does (docs/webhooks.md): recompute, compare in constant time, and refuse
    old timestamps so a captured request cannot be replayed later."""
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        fields.setdefault(key, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    current = int(time.time()) if now is None else now
    if abs(current - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).rsplit("v1=", 1)[1]
    return any(hmac.compare_digest(expected, given) for given in fields.get("v1", []))


def webhook_body(delivery: DeliveryAttempt) -> bytes:
    return msgspec.json.encode(
        {
            "id": str(delivery.id),
            "type": delivery.event,
            "sent_at": datetime.now(UTC).isoformat(),
            "attempt": delivery.attempts + 1,
            "data": delivery.alert,
        }
    )


async def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int | None, str | None]:
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS, follow_redirects=False) as client:
            response = await client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    if 200 <= response.status_code < 300:
        return response.status_code, None
    return response.status_code, f"HTTP {response.status_code}"


async def deliver_webhook(pool: asyncpg.Pool, job: ClaimedJob, context: WorkerContext) -> None:
    """Job ``risk.webhook``: one attempt of one delivery, recorded whatever the outcome."""
    keyring = context.resources.keyring
    delivery_id = uuid.UUID(job.payload["delivery_id"])
    async with pool.acquire() as conn, conn.transaction():
        repo = SubscriptionRepository(conn, keyring)
        delivery = await repo.attempt(delivery_id)
        if delivery is None or delivery.state in ("delivered", "dead"):
            return  # the subscription was deleted, or a retried job: nothing left to do
        if delivery.url is None or delivery.secret is None or delivery.state == "disabled":
            await repo.record_attempt(
                delivery, ok=False, status=None, error="subscription disabled", give_up=True
            )
            return
    body = webhook_body(delivery)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Fairwatch-Webhooks/1",
        "Fairwatch-Event": delivery.event,
        "Fairwatch-Delivery": str(delivery.id),
        SIGNATURE_HEADER: sign(delivery.secret, int(time.time()), body),
    }
    status, error = await _post(delivery.url, body, headers)
    async with pool.acquire() as conn, conn.transaction():
        state = await SubscriptionRepository(conn, keyring).record_outcome(
            delivery.id, ok=error is None, status=status, error=error
        )
    if state is not None and state != "delivered":
        _log.warning("webhook delivery %s %s: %s", delivery.id, state, error)
