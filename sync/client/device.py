"""The reference Device: records and amends reports offline, then pushes its outbox, pulls changes
and uploads attachments when a network is there, the way a monitor's phone app should.

Everything the monitor does is written to the outbox first (with its seq) and only then sent, so
closing the app or losing the network at any moment loses nothing and never renumbers anything.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import random
import shutil
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec

from cases.reports import DeclaredAttachment, Report
from sync.attachments import UploadRequest, UploadStatus, part_range
from sync.changes import ReportStatusChange
from sync.client.outbox import Identity, Outbox, PendingMutation
from sync.client.retry import RetryPolicy, Sleep
from sync.client.transport import BodyTooLarge, SyncError, SyncTransport
from sync.codec import encode
from sync.messages import (
    MAX_BATCH,
    AmendReport,
    CreateReport,
    DeleteReport,
    EnrollRequest,
    MutationStatus,
    PullRequest,
    PushRequest,
    ReportChanges,
    WipeInstruction,
)

__all__ = ["BatchPlanner", "Device", "PullSummary", "PushSummary", "UploadSummary", "seq_order"]

Clock = Callable[[], dt.datetime]
# Chooses the next batch from the oldest pending mutations (seq order), at most ``limit`` of them.
BatchPlanner = Callable[[list[PendingMutation], int], list[PendingMutation]]
# After this many rounds in which nothing settled (all held or seq_gap) push stops until next time.
_IDLE_ROUNDS = 3
_MAX_RESETS = 3


def seq_order(pending: list[PendingMutation], limit: int) -> list[PendingMutation]:
    """The default plan: the oldest ``limit`` mutations, in seq order."""
    return pending[:limit]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class PushSummary(msgspec.Struct, kw_only=True):
    batches: int = 0
    settled: int = 0
    rejected: int = 0
    conflicts: int = 0
    held: int = 0
    failures: int = 0
    remaining: int = 0


class PullSummary(msgspec.Struct, kw_only=True):
    pages: int = 0
    stored: int = 0
    skipped: int = 0
    removed: int = 0
    resets: int = 0
    failures: int = 0


class UploadSummary(msgspec.Struct, kw_only=True):
    parts_sent: int = 0
    completed: int = 0
    interrupted: bool = False
    failures: int = 0


def _read_part(path: Path, start: int, end: int) -> bytes:
    with path.open("rb") as f:
        f.seek(start)
        return f.read(end - start)


class Device:
    """One enrolled (or about to be enrolled) device, over its outbox and a transport."""

    def __init__(
        self,
        outbox: Outbox,
        transport: SyncTransport,
        *,
        media_dir: Path,
        clock: Clock = _utc_now,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
        plan_batch: BatchPlanner = seq_order,
        pull_limit: int = 200,
    ) -> None:
        self.outbox = outbox
        self.transport = transport
        self.media_dir = media_dir
        self.clock = clock
        self.retry = retry or RetryPolicy()
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self.sleep = sleep
        self.plan_batch = plan_batch
        self.pull_limit = pull_limit
        self.wiped: WipeInstruction | None = None
        self._batch_limit = MAX_BATCH
        transport.on_wipe = self._wipe
        identity = outbox.identity()
        if identity is not None:
            transport.credential = identity.credential

    @classmethod
    def open(cls, directory: Path, transport: SyncTransport, **options: Any) -> Device:
        """The device whose files live in ``directory`` (created if new, reopened otherwise)."""
        outbox = Outbox.open(directory / "outbox.sqlite3")
        return cls(outbox, transport, media_dir=directory / "media", **options)

    async def aclose(self) -> None:
        self.outbox.close()
        await self.transport.aclose()

    @property
    def identity(self) -> Identity:
        identity = self.outbox.identity()
        if identity is None:
            raise SyncError("the device is not enrolled" + (" (wiped)" if self.wiped else ""))
        return identity

    def _wipe(self, instruction: WipeInstruction) -> None:
        self.wiped = instruction
        self.outbox.wipe()
        shutil.rmtree(self.media_dir, ignore_errors=True)
        self.transport.credential = None

    async def _retrying(self, failures: int, exc: SyncError) -> int:
        """Sleep before the next try, or re-raise when it is pointless."""
        if not exc.retryable or failures + 1 >= self.retry.attempts:
            raise exc
        await self.sleep(self.retry.delay(failures, self.rng))
        return failures + 1

    # Enrollment ---------------------------------------------------------------------------------

    async def enroll(
        self, code: str, *, device_model: str | None = None, app_version: str | None = None
    ) -> Identity:
        request = EnrollRequest(
            code=code, device_model=device_model, app_version=app_version, device_time=self.clock()
        )
        # Not retried on its own: a lost answer burnt the one-time code; ask staff for a new one.
        enrolled = await self.transport.enroll(request)
        identity = self.outbox.save_identity(enrolled)
        self.transport.credential = identity.credential
        return identity

    # Offline actions ----------------------------------------------------------------------------

    def record_report(self, report: Report) -> CreateReport:
        return self.outbox.enqueue(
            lambda seq: CreateReport(
                seq=seq, mutation_id=uuid.uuid4(), recorded_at=self.clock(), report=report
            )
        )

    def known_version(self, report_id: uuid.UUID) -> int | None:
        """The newest version of a report this device has seen, from push answers or pulls: the
        base for its next amendment. (A pulled status's own ``version`` counts status updates.)"""
        known: list[int] = []
        local = self.outbox.report(report_id)
        if local is not None:
            # A create still in the outbox will be version 1 once the server applies it.
            known.append(local.server_version or 1)
        status = self.outbox.pulled_record("report", str(report_id))
        if isinstance(status, ReportStatusChange) and status.report_version is not None:
            known.append(status.report_version)
        return max(known) if known else None

    def amend_report(
        self, report_id: uuid.UUID, changes: ReportChanges, *, base_version: int | None = None
    ) -> AmendReport:
        base = base_version or self.known_version(report_id)
        if base is None:
            raise KeyError(f"report {report_id} is unknown to this device")
        return self.outbox.enqueue(
            lambda seq: AmendReport(
                seq=seq,
                mutation_id=uuid.uuid4(),
                recorded_at=self.clock(),
                report_id=report_id,
                base_version=base,
                changes=changes,
            )
        )

    def delete_report(self, report_id: uuid.UUID, reason: str = "") -> DeleteReport:
        base = self.known_version(report_id)
        if base is None:
            raise KeyError(f"report {report_id} is unknown to this device")
        return self.outbox.enqueue(
            lambda seq: DeleteReport(
                seq=seq,
                mutation_id=uuid.uuid4(),
                recorded_at=self.clock(),
                report_id=report_id,
                base_version=base,
                reason=reason,
            )
        )

    def attach(
        self, data: bytes, media_type: str, *, sensitive: bool = False
    ) -> DeclaredAttachment:
        """Keep a photo/recording as a content-addressed file and queue its upload."""
        sha256 = hashlib.sha256(data).hexdigest()
        self.media_dir.mkdir(parents=True, exist_ok=True)
        path = self.media_dir / sha256
        if not path.exists():
            tmp = path.with_suffix(".part")
            tmp.write_bytes(data)
            tmp.replace(path)
        self.outbox.add_upload(sha256, path, len(data), media_type)
        return DeclaredAttachment(
            sha256=sha256, size_bytes=len(data), media_type=media_type, sensitive=sensitive
        )

    # Push ---------------------------------------------------------------------------------------

    def _push_body(self, batch: list[PendingMutation]) -> PushRequest:
        fmt = self.transport.fmt
        raws = []
        for pending in batch:
            # The body is the one frozen at creation; only the transport-level counter moves.
            mutation = msgspec.structs.replace(pending.mutation(), attempt=pending.attempts)
            raws.append(msgspec.Raw(encode(mutation, fmt)))
        return PushRequest(
            device_id=self.identity.device_id,
            sent_at=self.clock(),
            outbox_depth=self.outbox.depth(),
            mutations=tuple(raws),
        )

    async def push(self) -> PushSummary:
        """Send the outbox in batches until it is empty or only waits on the server."""
        summary = PushSummary()
        limit = min(self.identity.max_batch, MAX_BATCH)
        idle = failures = 0
        while idle < _IDLE_ROUNDS:
            window = self.outbox.pending(limit=2 * min(limit, self._batch_limit))
            if not window:
                break
            batch = self.plan_batch(window, min(limit, self._batch_limit))
            self.outbox.mark_attempt([m.seq for m in batch])
            try:
                response = await self.transport.push(self._push_body(batch))
            except BodyTooLarge:
                if len(batch) == 1:
                    raise
                self._batch_limit = max(1, len(batch) // 2)
                continue
            except SyncError as exc:
                summary.failures += 1
                failures = await self._retrying(failures, exc)
                continue
            failures = 0
            summary.batches += 1
            settled = self.outbox.record_results(response.results)
            summary.settled += settled
            for result in response.results:
                if result.status is MutationStatus.REJECTED:
                    summary.rejected += 1
                elif result.status is MutationStatus.CONFLICT:
                    summary.conflicts += 1
                elif result.status is MutationStatus.HELD:
                    summary.held += 1
            if response.clock_offset_seconds is not None:
                self.outbox.set_meta("clock_offset_seconds", str(response.clock_offset_seconds))
            idle = 0 if settled else idle + 1
        summary.remaining = self.outbox.depth()
        return summary

    # Pull ---------------------------------------------------------------------------------------

    async def pull(self) -> PullSummary:
        """Pull pages until ``has_more`` is false, storing each page with its cursor."""
        summary = PullSummary()
        failures = 0
        limit = min(self.pull_limit, self.identity.max_pull_limit)
        while True:
            request = PullRequest(
                device_id=self.identity.device_id, cursor=self.outbox.cursor(), limit=limit
            )
            try:
                response = await self.transport.pull(request)
            except SyncError as exc:
                summary.failures += 1
                failures = await self._retrying(failures, exc)
                continue
            failures = 0
            if response.reset_required:
                summary.resets += 1
                if summary.resets > _MAX_RESETS:
                    raise SyncError(f"the server keeps asking to reset ({response.reset_reason})")
                self.outbox.reset_pulled()
                continue
            page = self.outbox.apply_page(response.changes, response.next_cursor)
            summary.pages += 1
            summary.stored += page.stored
            summary.skipped += page.skipped
            summary.removed += page.removed
            if not response.has_more:
                return summary

    # Attachments --------------------------------------------------------------------------------

    async def _upload_call(
        self,
        summary: UploadSummary,
        call: Callable[..., Awaitable[UploadStatus]],
        *args: Any,
    ) -> UploadStatus:
        failures = 0
        while True:
            try:
                return await call(*args)
            except SyncError as exc:
                summary.failures += 1
                failures = await self._retrying(failures, exc)

    async def upload_attachments(self, max_parts: int | None = None) -> UploadSummary:
        """Upload every unfinished attachment, asking the server which parts it still misses.
        ``max_parts`` stops after that many parts (a flaky link; the next call resumes)."""
        summary = UploadSummary()
        for sha256, path, size, media_type in self.outbox.pending_uploads():
            request = UploadRequest(sha256=sha256, size_bytes=size, media_type=media_type)
            status = await self._upload_call(summary, self.transport.start_upload, request)
            sent = 0
            for _ in range(2):  # a second round only if the server lost parts on its side
                for index in status.missing:
                    if max_parts is not None and summary.parts_sent >= max_parts:
                        summary.interrupted = True
                        break
                    start, end = part_range(index, size, status.part_size)
                    data = _read_part(path, start, end)
                    status = await self._upload_call(
                        summary, self.transport.put_part, sha256, index, data
                    )
                    sent += 1
                    summary.parts_sent += 1
                if status.complete or summary.interrupted:
                    break
                status = await self._upload_call(summary, self.transport.upload_status, sha256)
            self.outbox.record_upload(sha256, sent, status.complete)
            if status.complete:
                summary.completed += 1
            if summary.interrupted:
                break
        return summary
