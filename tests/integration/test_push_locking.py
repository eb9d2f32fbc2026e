"""A push never waits for a report in a cycle: with another push, a case manager or an upload.

``execute_push`` takes every report lock of a batch up front, in one order (docs/decisions/
0112-push-lock-order.md). Each test starts two writers that would otherwise meet in a cycle: a
third connection holds what both need first, the first writer is seen waiting (in pg_locks),
then the hold is let go. Taken as they came, one writer would now hold what the other waits for
while waiting for the other, and PostgreSQL would abort one as a deadlock (a 503 ``contention``
to a device); both must finish. The exception, two devices creating the same report ids in
opposite orders, must end in exactly one such abort and lose nothing. Last, a push with many
attachments holds a bounded number of advisory locks (PostgreSQL's shared lock table is small).

The writers call storage functions (``execute_push`` and the others) on their own connections:
the API test client would block the event loop while a request waits for a lock.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest

from cases.reports import DeclaredAttachment, Location, Report
from cases.taxonomy import load_taxonomy
from storage import push as push_module
from storage.attachments import receive_part, start_or_resume_upload
from storage.blobs import LocalBlobStore
from storage.case_links import create_case, link_reports
from storage.cases import CaseActor, CaseWriter
from storage.db import Conn, one_connection
from storage.devices import DeviceAuth
from storage.keyring import Keyring, MasterKey, MasterKeys
from storage.push import execute_push
from storage.tasks import create_task
from sync.attachments import UploadRequest
from sync.codec import WireFormat, decode_push
from sync.messages import (
    AmendReport,
    AnswerTask,
    CreateReport,
    Mutation,
    PushRequest,
    PushResponse,
    ReportChanges,
)
from tests.conftest import truncate_all

pytestmark = pytest.mark.db

NOW = dt.datetime.now(dt.UTC)
KEYRING = Keyring(MasterKeys(MasterKey(secrets.token_bytes(32))))
KNOWN = frozenset(c.code for c in load_taxonomy().active_categories())


@dataclass
class Phone:
    """A device and its next seq; its methods build the mutations it sends."""

    device: DeviceAuth
    next_seq: int = 1

    def create(self, report: Report) -> CreateReport:
        return CreateReport(
            seq=self._seq(), mutation_id=uuid.uuid4(), recorded_at=NOW, report=report
        )

    def amend(self, report_id: uuid.UUID, base_version: int, **changes: Any) -> AmendReport:
        return AmendReport(
            seq=self._seq(),
            mutation_id=uuid.uuid4(),
            recorded_at=NOW,
            report_id=report_id,
            base_version=base_version,
            changes=ReportChanges(**changes),
        )

    def answer(self, task_id: uuid.UUID, answer: str) -> AnswerTask:
        return AnswerTask(
            seq=self._seq(),
            mutation_id=uuid.uuid4(),
            recorded_at=NOW,
            task_id=task_id,
            answer=answer,
        )

    def _seq(self) -> int:
        self.next_seq += 1
        return self.next_seq - 1


async def send(conn: Conn, phone: Phone, mutations: list[Mutation]) -> PushResponse:
    body = msgspec.json.encode(
        PushRequest(
            device_id=phone.device.id,
            sent_at=NOW,
            mutations=tuple(msgspec.Raw(msgspec.json.encode(m)) for m in mutations),
        )
    )
    return await execute_push(
        conn,
        phone.device,
        decode_push(body, WireFormat.JSON),
        WireFormat.JSON,
        keyring=KEYRING,
        known_categories=KNOWN,
        received_at=NOW,
    )


def new_report() -> Report:
    return Report(
        id=uuid.uuid4(),
        occurred_at=NOW - dt.timedelta(days=1),
        location=Location(lat=27.7, lon=85.3),
        categories=(sorted(KNOWN)[0],),
        severity=3,
        narrative="Passports kept by the supervisor.",
    )


@dataclass(frozen=True)
class Monitor:
    first: Phone
    second: Phone
    r1: uuid.UUID
    r2: uuid.UUID


@pytest.fixture
async def monitor(pool: asyncpg.Pool) -> AsyncIterator[Monitor]:
    """One monitor with two phones and two reports (created by the first phone), committed."""
    async with pool.acquire() as conn:
        org = await conn.fetchval(
            "INSERT INTO orgs (slug, name) VALUES ($1, 'Org') RETURNING id",
            f"lock-{uuid.uuid4().hex}",
        )
        monitor_id = await conn.fetchval(
            "INSERT INTO monitors (org_id, display_name) VALUES ($1, 'M') RETURNING id", org
        )
        phones = []
        for _ in range(2):
            device = await conn.fetchval(
                "INSERT INTO devices (org_id, monitor_id, credential_hash) VALUES ($1, $2, $3)"
                " RETURNING id",
                org,
                monitor_id,
                secrets.token_bytes(32),
            )
            auth = DeviceAuth(
                id=device,
                org_id=org,
                monitor_id=monitor_id,
                enrolled_at=NOW - dt.timedelta(days=30),
                revoked_at=None,
                revoked_reason=None,
                region_cells=[],
                region_countries=[],
                monitor_active=True,
            )
            phones.append(Phone(auth))
        first, second = phones
        # r1 < r2, so that "opposite orders" below means against id order for one of the pushes.
        r1, r2 = sorted((new_report(), new_report()), key=lambda r: r.id)
        answer = await send(conn, first, [first.create(r1), first.create(r2)])
        assert [r.status.value for r in answer.results] == ["applied", "applied"]
    try:
        yield Monitor(first, second, r1.id, r2.id)
    finally:
        await truncate_all(pool)


async def until_waiting(watcher: Conn, pid: int, work: asyncio.Task[Any]) -> None:
    """Return once backend ``pid`` waits for a lock; fail if ``work`` ends without waiting."""
    while not await watcher.fetchval(
        "SELECT count(*) > 0 FROM pg_locks WHERE pid = $1 AND NOT granted", pid
    ):
        assert not work.done(), "it finished without waiting for what the test holds"
        await asyncio.sleep(0.005)  # polling for a state, not timing anything


Work = Callable[[Conn], Coroutine[Any, Any, Any]]


async def hold_then_race(
    pool: asyncpg.Pool, hold: str, args: Sequence[Any], first: Work, second: Work
) -> list[Any]:
    """``first`` and ``second``, each on its own connection, started while another transaction
    holds what the ``hold`` statement locks: ``first`` starts and is seen waiting, then
    ``second``; then the hold is let go. Their answers; fails if either raised."""
    answers = await hold_then_settle(pool, hold, args, first, second)
    failed = [a for a in answers if isinstance(a, BaseException)]
    assert not failed, failed  # a deadlock aborts one of them (a 503 to a device)
    return answers


async def hold_then_settle(
    pool: asyncpg.Pool, hold: str, args: Sequence[Any], first: Work, second: Work
) -> list[Any]:
    """As ``hold_then_race``, but an exception raised by either is its answer."""
    async with (
        pool.acquire() as holder,
        pool.acquire() as watcher,
        pool.acquire() as conn_a,
        pool.acquire() as conn_b,
    ):
        holding = holder.transaction()
        await holding.start()
        tasks: list[asyncio.Task[Any]] = []
        try:
            await holder.execute(hold, *args)
            tasks.append(asyncio.create_task(first(conn_a)))
            await until_waiting(watcher, conn_a.get_server_pid(), tasks[0])
            tasks.append(asyncio.create_task(second(conn_b)))
            await until_waiting(watcher, conn_b.get_server_pid(), tasks[1])
        finally:
            await holding.rollback()
            answers = await asyncio.gather(*tasks, return_exceptions=True)
    return answers


async def race(
    pool: asyncpg.Pool,
    held: list[uuid.UUID],
    first: tuple[Phone, list[Mutation]],
    second: tuple[Phone, list[Mutation]],
) -> list[list[str]]:
    """Two pushes, the first seen waiting for the ``held`` reports before the second starts
    (``hold_then_race``). The statuses of each push's results, in order."""
    answers = await hold_then_race(
        pool,
        "SELECT id FROM reports WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE",
        [held],
        functools.partial(send, phone=first[0], mutations=first[1]),
        functools.partial(send, phone=second[0], mutations=second[1]),
    )
    return [[r.status.value for r in a.results] for a in answers]


async def report_rows(pool: asyncpg.Pool, ids: list[uuid.UUID]) -> list[tuple[Any, ...]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT id, version, content->>'narrative' AS narrative,"
            " (content->>'severity')::int AS severity"
            " FROM reports WHERE id = ANY($1::uuid[]) ORDER BY id",
            ids,
        )
    return [tuple(r) for r in rows]


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "one_by_one"])
async def test_two_phones_amending_the_same_reports_in_opposite_orders_both_apply(
    pool: asyncpg.Pool, monitor: Monitor, monkeypatch: pytest.MonkeyPatch, batched: bool
) -> None:
    """A = [amend r1, create x, amend r2], B = [amend r2, create y, amend r1].

    One by one (the path a run the database refuses falls back to), each push locks its first
    report, then its second. Batched, an edit run holds its reports until the batch commits, and
    an amendment sent before the create of its report (refused: not found yet) closes the run,
    so the first report is locked in one run and the second in the next.
    """
    m = monitor
    monkeypatch.setattr(push_module, "BATCH_EDITS", batched)
    x, y = new_report(), new_report()
    a, b = m.first, m.second
    first: list[Mutation] = [a.amend(m.r1, 1, narrative="Seen again by phone A.")]
    second: list[Mutation] = [b.amend(m.r2, 1, severity=5)]
    if batched:
        first.append(a.amend(x.id, 1, severity=1))
        second.append(b.amend(y.id, 1, severity=1))
    first += [a.create(x), a.amend(m.r2, 1, narrative="Seen again by phone A.")]
    second += [b.create(y), b.amend(m.r1, 1, severity=5)]

    statuses = await race(pool, [m.r1, m.r2], (a, first), (b, second))

    early = ["rejected"] if batched else []
    assert statuses == [
        ["applied", *early, "applied", "applied"],
        ["applied", *early, "applied", "applied"],
    ]
    # Both phones' changes merged into each report (one version each).
    assert await report_rows(pool, [m.r1, m.r2]) == [
        (m.r1, 3, "Seen again by phone A.", 5),
        (m.r2, 3, "Seen again by phone A.", 5),
    ]
    assert [r[1] for r in await report_rows(pool, [x.id, y.id])] == [1, 1]


async def case_manager(conn: Conn, org_id: uuid.UUID) -> CaseActor:
    """A case manager of the org, inserted directly (the API is not what these tests race)."""
    user = await conn.fetchval(
        "INSERT INTO staff_users (org_id, email, display_name, role, password_hash)"
        " VALUES ($1, $2, 'Case manager', 'case_manager', 'x') RETURNING id",
        org_id,
        f"cm-{uuid.uuid4().hex}@example.org",
    )
    return CaseActor.staff(user, supervisor=False)


async def cases_with_a_task(pool: asyncpg.Pool, m: Monitor) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """Two cases (one of r1, one of r2), each with an open task for the monitor: (case, task)."""
    org_id, monitor_id = m.first.device.org_id, m.first.device.monitor_id
    async with pool.acquire() as conn, conn.transaction():
        staff = await case_manager(conn, org_id)
        return [
            await case_with_a_task(conn, staff, org_id, monitor_id, report_id)
            for report_id in (m.r1, m.r2)
        ]


async def case_with_a_task(
    conn: Conn, staff: CaseActor, org_id: uuid.UUID, monitor_id: uuid.UUID, report_id: uuid.UUID
) -> tuple[uuid.UUID, uuid.UUID]:
    """A case of the report with an open task for the monitor: (case, task)."""
    case = await create_case(conn, org_id=org_id, actor=staff, report_ids=[report_id])
    assert case is not None
    writer = await CaseWriter.lock(conn, org_id, case.id, None)
    task = await create_task(
        conn, writer, staff, created_by=uuid.UUID(staff.id), monitor_id=monitor_id,
        prompt="Any news?",
    )  # fmt: skip
    return case.id, task.id


async def test_two_phones_creating_the_same_reports_in_opposite_orders_deadlock_once(
    pool: asyncpg.Pool, monitor: Monitor
) -> None:
    """Both phones send the same two new reports z and w (an outbox restored onto the second
    phone), in opposite orders, each answering its own task in between: A = [create z, amend z,
    answer t1, amend w, create w], B = [create w, amend w, answer t2, amend z, create z]. Each
    writes its first report, waits for its task's case (held by the test), then inserts the
    report the other has written and not committed: a cycle no row lock can prevent (neither
    report had a row when the pushes locked theirs). No honest device does this (report ids are
    chosen on the phone), so the push takes no lock per report id (they would fill PostgreSQL's
    shared lock table): PostgreSQL aborts one push as a deadlock (a 503 ``contention`` to its
    device), nothing of it is saved, and its resend is applied exactly once.
    """
    m = monitor
    a, b = m.first, m.second
    (c1, t1), (c2, t2) = await cases_with_a_task(pool, m)
    z, w = new_report(), new_report()
    by_a = "Seen again by phone A."
    by_b = "Seen again by phone B."
    first: list[Mutation] = [
        a.create(z),
        a.amend(z.id, 1, severity=1),
        a.answer(t1, "Still there."),
        a.amend(w.id, 1, narrative=by_a),
        a.create(w),
    ]
    second: list[Mutation] = [
        b.create(w),
        b.amend(w.id, 1, severity=2),
        b.answer(t2, "Still there."),
        b.amend(z.id, 1, narrative=by_b),
        b.create(z),
    ]

    answers = await hold_then_settle(
        pool,
        "SELECT id FROM cases WHERE id = ANY($1::uuid[]) FOR UPDATE",
        [[c1, c2]],
        functools.partial(send, phone=a, mutations=first),
        functools.partial(send, phone=b, mutations=second),
    )

    failed = [i for i, answer in enumerate(answers) if isinstance(answer, BaseException)]
    assert len(failed) == 1, answers
    [lost] = failed
    assert isinstance(answers[lost], asyncpg.exceptions.DeadlockDetectedError), answers[lost]
    assert isinstance(answers[lost], asyncpg.exceptions.TransactionRollbackError)
    winner, loser, batch = (b, a, first) if lost == 0 else (a, b, second)
    async with pool.acquire() as conn:
        stored = await conn.fetchval(
            "SELECT count(*) FROM sync_mutations WHERE mutation_id = ANY($1::uuid[])",
            [mutation.mutation_id for mutation in batch],
        )
        assert stored == 0  # nothing of the aborted push was saved
        retried = await send(conn, loser, batch)
    won = answers[1 - lost]
    assert isinstance(won, PushResponse)
    # The winner found neither report of the other; the loser, resent, found both.
    assert [r.status.value for r in won.results] == [
        "applied", "applied", "applied", "rejected", "applied",
    ]  # fmt: skip
    assert [r.status.value for r in retried.results] == [
        "duplicate", "applied", "applied", "applied", "rejected",
    ]  # fmt: skip
    # The winner's first report got both amendments; its second one (the loser's first) only the
    # loser's, the winner's having been refused (not found yet).
    expected = {
        z.id: (2, z.narrative, 1),
        w.id: (3, by_a, 2),
    }
    if winner is a:
        expected = {
            z.id: (3, by_b, 1),
            w.id: (2, w.narrative, 2),
        }
    rows = await report_rows(pool, [z.id, w.id])
    assert {r[0]: r[1:] for r in rows} == expected
    async with pool.acquire() as conn:
        answered = await conn.fetchval(
            "SELECT count(*) FROM case_tasks WHERE id = ANY($1::uuid[]) AND status = 'answered'",
            [t1, t2],
        )
        assert answered == 2


async def test_a_case_linking_a_report_while_a_push_answers_its_task_and_amends_the_report(
    pool: asyncpg.Pool, monitor: Monitor
) -> None:
    """The push takes its report locks before it answers a task, which locks the task's case. A
    case manager linking that report to that case holds the case while the link's foreign key
    check locks the report (FOR KEY SHARE). The push's locks must let that check through (FOR NO
    KEY UPDATE, the lock its own UPDATE takes): FOR UPDATE would hold the report the case manager
    waits for while waiting for the case the case manager holds.
    """
    m = monitor
    org_id, monitor_id = m.first.device.org_id, m.first.device.monitor_id
    async with pool.acquire() as conn, conn.transaction():
        staff = await case_manager(conn, org_id)
        case_id, task_id = await case_with_a_task(conn, staff, org_id, monitor_id, m.r2)

    async def link(conn: Conn) -> None:
        async with conn.transaction():
            writer = await CaseWriter.lock(conn, org_id, case_id, None)
            await link_reports(conn, writer, staff, [m.r1])

    a = m.first
    mutations: list[Mutation] = [
        a.answer(task_id, "The passports were given back."),
        a.amend(m.r1, 1, severity=5),
    ]
    # The case manager waits for the case first, so it gets the case first.
    _, answer = await hold_then_race(
        pool,
        "SELECT id FROM cases WHERE id = $1 FOR UPDATE",
        [case_id],
        link,
        functools.partial(send, phone=a, mutations=mutations),
    )

    assert [r.status.value for r in answer.results] == ["applied", "applied"]
    async with pool.acquire() as conn:
        linked = await conn.fetch(
            "SELECT report_id FROM case_reports WHERE case_id = $1 ORDER BY report_id", case_id
        )
        assert [r["report_id"] for r in linked] == sorted([m.r1, m.r2])
        assert await conn.fetchval("SELECT status FROM case_tasks WHERE id = $1", task_id) == (
            "answered"
        )


async def test_an_upload_finishing_while_a_push_amends_the_reports_declaring_it(
    pool: asyncpg.Pool, monitor: Monitor, tmp_path: Path
) -> None:
    """A file two reports declare finishes uploading while the other phone amends both reports.
    The upload tells each report's devices that the file arrived (a status bump: a lock on the
    report, one report after the other), the push locks both reports up front; both go in id
    order, so the one that waits first goes first. (Before, the upload took the reports in
    whatever order the query returned them, and could hold the second while waiting for the
    first, which the push held while waiting for the second.)"""
    m = monitor
    a, b = m.first, m.second
    data = secrets.token_bytes(3000)
    sha = hashlib.sha256(data).hexdigest()
    photo = DeclaredAttachment(sha256=sha, size_bytes=len(data), media_type="image/jpeg")
    z1, z2 = sorted(
        (msgspec.structs.replace(new_report(), attachments=(photo,)) for _ in range(2)),
        key=lambda r: r.id,
    )
    store = LocalBlobStore(tmp_path)
    async with pool.acquire() as conn:
        # The second report first, so that the stored rows are not in id order.
        answer = await send(conn, a, [a.create(z2), a.create(z1)])
        assert [r.status.value for r in answer.results] == ["applied", "applied"]
        request = UploadRequest(sha256=sha, size_bytes=len(data), media_type="image/jpeg")
        assert (await start_or_resume_upload(conn, store, a.device, request)).missing == (0,)

    async def last_part(conn: Conn) -> bool:
        async def chunks() -> AsyncIterator[bytes]:
            yield data

        return (
            await receive_part(one_connection(conn), store, a.device, sha, 0, chunks())
        ).complete

    mutations: list[Mutation] = [b.amend(z2.id, 1, severity=1), b.amend(z1.id, 1, severity=2)]
    complete, answer = await hold_then_race(
        pool,
        "SELECT id FROM reports WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE",
        [[z1.id, z2.id]],
        last_part,
        functools.partial(send, phone=b, mutations=mutations),
    )

    assert complete
    assert [r.status.value for r in answer.results] == ["applied", "applied"]
    assert [r[1:] for r in await report_rows(pool, [z1.id, z2.id])] == [
        (2, z1.narrative, 2),
        (2, z2.narrative, 1),
    ]


async def test_a_push_of_many_attachments_takes_a_bounded_number_of_shared_hash_locks(
    pool: asyncpg.Pool, monitor: Monitor
) -> None:
    """60 new reports declaring 20 files each: 1,200 hashes. The push shares one lock per bucket
    of hashes (1,024 at most), not one per hash: PostgreSQL's shared lock table holds about 6,400
    entries for all sessions by default, and a lock per hash let one big push exhaust it (and
    fail the same way on every resend). Looked at in pg_locks before the push's transaction ends.
    """
    a = monitor.first
    reports = [
        msgspec.structs.replace(
            new_report(),
            attachments=tuple(
                DeclaredAttachment(
                    sha256=secrets.token_hex(32), size_bytes=1000, media_type="image/jpeg"
                )
                for _ in range(20)
            ),
        )
        for _ in range(60)
    ]
    async with pool.acquire() as conn:
        async with conn.transaction():
            answer = await send(conn, a, [a.create(r) for r in reports])
            locks = await conn.fetch(
                "SELECT mode, count(*) AS n FROM pg_locks"
                " WHERE pid = pg_backend_pid() AND locktype = 'advisory' GROUP BY mode"
            )
        assert {r.status.value for r in answer.results} == {"applied"}
        assert await conn.fetchval(
            "SELECT count(*) FROM reports WHERE id = ANY($1::uuid[])", [r.id for r in reports]
        ) == len(reports)  # fmt: skip
    held = {r["mode"]: r["n"] for r in locks}
    assert 0 < sum(held.values()) <= 1024
    assert set(held) == {"ShareLock"}  # pushes never wait for each other on hashes
