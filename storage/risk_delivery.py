"""Who hears about an alert: analysts' subscriptions (region as H3 cells or countries,
categories, minimum recurrence interval, optional webhook) and the webhook delivery log, whose
attempts run as jobs (``risk.webhook``) with exponential backoff."""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import asyncpg
import h3
import msgspec
from msgspec import Meta

from cases.taxonomy import CategoryCode
from storage.db import Conn
from storage.errors import NotFound
from storage.jobs import JobQueue
from storage.keyring import Keyring
from storage.queries import Q
from storage.risk_alerts import AlertView

__all__ = [
    "DELIVERY_JOB",
    "MAX_DELIVERY_ATTEMPTS",
    "Delivery",
    "DeliveryAttempt",
    "Subscription",
    "SubscriptionDraft",
    "SubscriptionRepository",
    "enqueue_deliveries",
    "retry_delay",
    "subscription_matches",
]

DELIVERY_JOB = "risk.webhook"
MAX_DELIVERY_ATTEMPTS = 10
RETRY_BASE = timedelta(seconds=30)
RETRY_CAP = timedelta(hours=6)
SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret

CountryCode = Annotated[str, Meta(pattern=r"^[A-Z]{2}$")]
H3Cell = Annotated[str, Meta(pattern=r"^[0-9a-f]{15}$")]


def retry_delay(attempts: int) -> timedelta:
    """Wait after the ``attempts``-th failure: 30 s, 1 min, 2 min ... capped at 6 h."""
    delay: timedelta = RETRY_BASE * 2 ** max(attempts - 1, 0)
    return min(RETRY_CAP, delay)


class SubscriptionDraft(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Empty ``cells`` and ``countries`` mean everywhere; empty ``categories`` mean all."""

    name: Annotated[str, Meta(min_length=1, max_length=100)]
    cells: Annotated[list[H3Cell], Meta(max_length=500)] = []
    countries: Annotated[list[CountryCode], Meta(max_length=250)] = []
    categories: Annotated[list[CategoryCode], Meta(max_length=50)] = []
    min_recurrence_days: Annotated[float, Meta(ge=0.0, le=1e9)] = 0.0
    webhook_url: Annotated[str, Meta(max_length=2000, pattern=r"^https?://")] | None = None
    enabled: bool = True


class Subscription(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    cells: list[str]
    countries: list[str]
    categories: list[str]
    min_recurrence_days: float
    webhook_url: str | None
    enabled: bool
    created_at: datetime
    webhook_secret: str | None = None
    """Shown once, when the subscription is created; sign-checks every delivery."""


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    subscription_id: uuid.UUID
    alert_id: uuid.UUID
    alert_version: int
    event: str
    state: Literal["pending", "delivered", "failed", "dead"]
    attempts: int
    last_status: int | None
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    finished_at: datetime | None


class DeliveryAttempt(msgspec.Struct, frozen=True, kw_only=True):
    """A delivery about to be attempted: where, with which secret, what body."""

    id: uuid.UUID
    org_id: uuid.UUID
    event: str
    attempts: int
    state: str
    url: str | None
    secret: str | None
    alert: dict[str, Any]


def _subscription(row: asyncpg.Record, secret: str | None = None) -> Subscription:
    return Subscription(
        id=row["id"],
        user_id=row["user_id"],
        name=row["name"],
        cells=list(row["cells"]),
        countries=list(row["countries"]),
        categories=list(row["categories"]),
        min_recurrence_days=row["min_recurrence_days"],
        webhook_url=row["webhook_url"],
        enabled=row["enabled"],
        created_at=row["created_at"],
        webhook_secret=secret,
    )


def _secret_context(org_id: uuid.UUID) -> bytes:
    return b"alert_subscriptions.webhook_secret:" + str(org_id).encode()


def _cells_overlap(ours: list[str], theirs: list[str]) -> bool:
    # Compare each pair at the coarser of the two resolutions, so a subscription to a district
    # (resolution 5) catches alerts drawn at resolution 7 and the other way round.
    for a in ours:
        ra = h3.get_resolution(a)
        for b in theirs:
            rb = h3.get_resolution(b)
            if ra >= rb and h3.cell_to_parent(a, rb) == b:
                return True
            if rb > ra and h3.cell_to_parent(b, ra) == a:
                return True
    return False


def subscription_matches(sub: Subscription, alert: AlertView) -> bool:
    if not sub.enabled or alert.recurrence_interval_days < sub.min_recurrence_days:
        return False
    if sub.categories and not set(sub.categories) & set(alert.categories):
        return False
    if sub.cells or sub.countries:
        in_cells = bool(sub.cells) and _cells_overlap(alert.cells, sub.cells)
        in_countries = bool(set(sub.countries) & set(alert.countries))
        return in_cells or in_countries
    return True


class SubscriptionRepository:
    def __init__(self, conn: Conn, keyring: Keyring) -> None:
        self._conn = conn
        self._keyring = keyring

    async def add(
        self, org_id: uuid.UUID, user_id: uuid.UUID, draft: SubscriptionDraft
    ) -> Subscription:
        secret = sealed = None
        if draft.webhook_url is not None:
            secret = SECRET_PREFIX + secrets.token_urlsafe(32)
            sealed = await self._keyring.encrypt(
                self._conn, org_id, secret.encode(), _secret_context(org_id)
            )
        row = await self._conn.fetchrow(
            Q.insert_subscription, org_id, user_id, draft.name, draft.cells, draft.countries,
            draft.categories, draft.min_recurrence_days, draft.webhook_url, sealed, draft.enabled,
        )  # fmt: skip
        assert row is not None
        return _subscription(row, secret)

    async def of_user(self, org_id: uuid.UUID, user_id: uuid.UUID) -> list[Subscription]:
        rows = await self._conn.fetch(Q.list_subscriptions_of_user, org_id, user_id)
        return [_subscription(r) for r in rows]

    async def get(self, org_id: uuid.UUID, user_id: uuid.UUID, sub_id: uuid.UUID) -> Subscription:
        row = await self._conn.fetchrow(Q.get_subscription, org_id, sub_id)
        if row is None or row["user_id"] != user_id:
            raise NotFound("subscription", sub_id)
        return _subscription(row)

    async def delete(self, org_id: uuid.UUID, user_id: uuid.UUID, sub_id: uuid.UUID) -> None:
        if await self._conn.fetchval(Q.delete_subscription, org_id, sub_id, user_id) is None:
            raise NotFound("subscription", sub_id)

    async def deliveries(self, org_id: uuid.UUID, sub_id: uuid.UUID, limit: int) -> list[Delivery]:
        rows = await self._conn.fetch(Q.list_webhook_deliveries, org_id, sub_id, limit)
        return [Delivery(**dict(r)) for r in rows]

    async def attempt(self, delivery_id: uuid.UUID) -> DeliveryAttempt | None:
        """The delivery, locked for this attempt, with its secret decrypted."""
        row = await self._conn.fetchrow(Q.get_webhook_delivery_for_update, delivery_id)
        if row is None:
            return None
        secret = None
        if row["webhook_secret_sealed"] is not None:
            raw = await self._keyring.decrypt(
                self._conn, row["org_id"], row["webhook_secret_sealed"],
                _secret_context(row["org_id"]),
            )  # fmt: skip
            secret = raw.decode()
        return DeliveryAttempt(
            id=row["id"],
            org_id=row["org_id"],
            event=row["event"],
            attempts=row["attempts"],
            state=row["state"] if row["enabled"] else "disabled",
            url=row["webhook_url"],
            secret=secret,
            alert=msgspec.json.decode(row["snapshot"]),
        )

    async def record_outcome(
        self, delivery_id: uuid.UUID, *, ok: bool, status: int | None, error: str | None
    ) -> str | None:
        """Record an attempt made outside the transaction that read the delivery.

        The delivery is locked and read again: it may have been deleted with its subscription
        (None, nothing recorded), or settled meanwhile by a duplicate run of the job (its state
        stays as it is), and the attempt count is the current one.
        """
        row = await self._conn.fetchrow(Q.get_webhook_delivery_for_update, delivery_id)
        if row is None:
            return None
        if row["state"] in ("delivered", "dead"):
            return str(row["state"])
        current = DeliveryAttempt(
            id=row["id"], org_id=row["org_id"], event=row["event"], attempts=row["attempts"],
            state=row["state"], url=row["webhook_url"], secret=None, alert={},
        )  # fmt: skip
        return await self.record_attempt(current, ok=ok, status=status, error=error)

    async def record_attempt(
        self,
        delivery: DeliveryAttempt,
        *,
        ok: bool,
        status: int | None,
        error: str | None,
        give_up: bool = False,
    ) -> str:
        """Record one attempt; on failure queue the next with backoff, or dead-letter it."""
        attempts = delivery.attempts + 1
        if ok:
            state, next_at = "delivered", None
        elif give_up or attempts >= MAX_DELIVERY_ATTEMPTS:
            state, next_at = "dead", None
        else:
            state = "failed"
            next_at = await self._conn.fetchval("SELECT now()") + retry_delay(attempts)
        await self._conn.execute(
            Q.record_webhook_attempt, delivery.id, state, status,
            None if error is None else error[:500], next_at,
        )  # fmt: skip
        if next_at is not None:
            await JobQueue(self._conn).enqueue(
                DELIVERY_JOB,
                {"delivery_id": str(delivery.id)},
                org_id=delivery.org_id,
                dedupe_key=f"{delivery.id}:{attempts}",
                run_after=next_at,
                max_attempts=3,
            )
        return state


async def enqueue_deliveries(
    conn: Conn, org_id: uuid.UUID, events: list[tuple[AlertView, str]]
) -> int:
    """One delivery (and its first job) per matching webhook subscription and alert event."""
    if not events:
        return 0
    rows = await conn.fetch(Q.list_enabled_subscriptions, org_id)
    subs = [_subscription(r) for r in rows if r["webhook_url"] is not None]
    queued = 0
    for alert, event in events:
        for sub in subs:
            if not subscription_matches(sub, alert):
                continue
            delivery_id = await conn.fetchval(
                Q.insert_webhook_delivery, org_id, sub.id, alert.id, alert.version, event
            )
            if delivery_id is None:
                continue
            await JobQueue(conn).enqueue(
                DELIVERY_JOB,
                {"delivery_id": str(delivery_id)},
                org_id=org_id,
                dedupe_key=f"{delivery_id}:0",
                max_attempts=3,
            )
            queued += 1
    return queued
