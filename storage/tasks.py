"""Tasks a case manager sends to a monitor ("collect the contract"), and the monitor's answers.

A task reaches the monitor's devices through the sync feed (a ``TaskChange`` for the audience
``monitor:<id>``, republished with a higher version whenever its status changes) and comes back
as an ``AnswerTask`` mutation in a push. Both directions are on the case's timeline.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal

import msgspec

from cases.reports import DeclaredAttachment
from storage.cases import CaseActor, CaseWriter, get_case
from storage.db import Conn
from storage.devices import DeviceAuth
from storage.errors import NotFound, StorageError
from storage.feed import monitor_audience
from storage.queries import Q
from sync.changes import RecordKind, TaskChange
from sync.messages import AnswerTask, MutationResult, MutationStatus, ReasonCode

__all__ = [
    "Task",
    "TaskClosed",
    "TaskStatus",
    "answer_task",
    "cancel_task",
    "create_task",
    "list_tasks",
]

TaskStatus = Literal["open", "answered", "cancelled"]
_ENCODER = msgspec.json.Encoder()


class TaskClosed(StorageError):
    """The task was already answered or cancelled."""

    def __init__(self, task_id: uuid.UUID, status: str) -> None:
        super().__init__(f"task {task_id} is {status}")
        self.task_id = task_id
        self.status = status


class Task(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    case_id: uuid.UUID
    monitor_id: uuid.UUID
    report_id: uuid.UUID | None
    prompt: str
    due_at: dt.datetime | None
    status: TaskStatus
    version: int
    answer: str | None
    answer_attachments: list[DeclaredAttachment]
    answered_at: dt.datetime | None
    answered_by_device: uuid.UUID | None
    created_by: uuid.UUID
    created_at: dt.datetime
    updated_at: dt.datetime


def _task(row: Any) -> Task:
    data = {k: v for k, v in dict(row).items() if k != "org_id"}
    data["answer_attachments"] = msgspec.json.decode(data["answer_attachments"])
    task: Task = msgspec.convert(data, Task, strict=False)
    return task


async def _publish(conn: Conn, org_id: uuid.UUID, task: Task) -> None:
    """Put the task's current state in its monitor's feed (the ``storage.feed`` upsert pattern)."""
    change = TaskChange(
        version=task.version,
        changed_at=dt.datetime.now(dt.UTC),
        task_id=task.id,
        report_id=task.report_id,
        prompt=task.prompt,
        due_at=task.due_at,
        status=task.status,
    )
    await conn.execute(
        Q.upsert_feed_change,
        org_id,
        monitor_audience(task.monitor_id),
        RecordKind.TASK.value,
        str(task.id),
        task.version,
        _ENCODER.encode(change).decode(),
    )


async def create_task(
    conn: Conn,
    writer: CaseWriter,
    actor: CaseActor,
    *,
    created_by: uuid.UUID,
    monitor_id: uuid.UUID,
    prompt: str,
    report_id: uuid.UUID | None = None,
    due_at: dt.datetime | None = None,
) -> Task:
    case = writer.case
    if report_id is not None and not await conn.fetchval(
        Q.task_case_has_report, case.id, report_id
    ):
        raise NotFound("case report", report_id)
    row = await conn.fetchrow(
        Q.task_insert, case.org_id, case.id, monitor_id, report_id, prompt, due_at, created_by
    )
    if row is None:
        raise NotFound("monitor", monitor_id)
    task = _task(row)
    await _publish(conn, case.org_id, task)
    await writer.record(
        "task_sent", actor, {"task": str(task.id), "monitor": str(monitor_id), "prompt": prompt}
    )
    return task


async def cancel_task(conn: Conn, writer: CaseWriter, actor: CaseActor, task_id: uuid.UUID) -> Task:
    case = writer.case
    row = await conn.fetchrow(Q.task_cancel, case.org_id, case.id, task_id)
    if row is None:
        status = await conn.fetchval(Q.task_status, case.org_id, case.id, task_id)
        if status is None:
            raise NotFound("task", task_id)
        raise TaskClosed(task_id, status)
    task = _task(row)
    await _publish(conn, case.org_id, task)
    await writer.record("task_cancelled", actor, {"task": str(task_id)})
    return task


async def list_tasks(conn: Conn, org_id: uuid.UUID, case_id: uuid.UUID) -> list[Task]:
    await get_case(conn, org_id, case_id)
    return [_task(r) for r in await conn.fetch(Q.tasks_of_case, org_id, case_id)]


def _result(
    mutation: AnswerTask,
    received_at: dt.datetime,
    status: MutationStatus,
    reason: ReasonCode | None = None,
    version: int | None = None,
    detail: str | None = None,
) -> MutationResult:
    return MutationResult(
        mutation_id=mutation.mutation_id,
        seq=mutation.seq,
        status=status,
        reason=reason,
        detail=detail,
        record_id=mutation.task_id,
        version=version,
        received_at=received_at,
    )


async def answer_task(
    conn: Conn, device: DeviceAuth, mutation: AnswerTask, received_at: dt.datetime
) -> MutationResult:
    """Apply a monitor's answer from a push, in the push's transaction (savepoint).

    Rejected ``not_found`` for a task of another organisation (indistinguishable from none),
    ``not_owner`` when the task went to another monitor, ``task_closed`` once it is answered or
    cancelled. Resends never get here: the push ledger replays the stored result.
    """
    # Read without locking; the case is locked first below, the same order staff writes use
    # (case, then task), so an answer racing a cancellation cannot deadlock.
    row = await conn.fetchrow(Q.task_peek, mutation.task_id)
    if row is None or row["org_id"] != device.org_id:
        return _result(mutation, received_at, MutationStatus.REJECTED, ReasonCode.NOT_FOUND)
    if row["monitor_id"] != device.monitor_id:
        return _result(mutation, received_at, MutationStatus.REJECTED, ReasonCode.NOT_OWNER)
    writer = await CaseWriter.lock(conn, device.org_id, row["case_id"], None)
    updated = await conn.fetchrow(
        Q.task_answer,
        mutation.task_id,
        mutation.answer,
        _ENCODER.encode(list(mutation.attachments)).decode(),
        received_at,
        device.id,
        mutation.mutation_id,
    )
    if updated is None:
        current = await conn.fetchrow(Q.task_peek, mutation.task_id)
        assert current is not None
        return _result(
            mutation,
            received_at,
            MutationStatus.REJECTED,
            ReasonCode.TASK_CLOSED,
            version=current["version"],
            detail=f"the task is {current['status']}",
        )
    task = _task(updated)
    await _publish(conn, device.org_id, task)
    await writer.record(
        "task_answered",
        CaseActor.device(device.id),
        {"task": str(task.id), "monitor": str(device.monitor_id)},
        at=received_at,
    )
    return _result(mutation, received_at, MutationStatus.APPLIED, version=task.version)
