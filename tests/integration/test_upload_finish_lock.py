"""Finishing an upload verifies the blob before it takes the hash bucket, and stays safe.

The store reads and hashes the whole blob (`assemble`, seconds for a large file) while the finish
holds only its upload row; the exclusive hash bucket (one of 1,024, shared by pushes declaring any
hash of it) is taken afterwards, for `complete` (which stores the verified bytes again if they
went meanwhile) and the database records. Each test parks the store at one point of a finish
with an asyncio.Event and plays the other side (a push, an erasure, a second finish) on another
connection, then checks the end state: never a delivered record without its bytes, nothing kept
of an erased or mismatched upload, every caller answered correctly.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import asyncpg
import msgspec
import pytest

from cases.reports import DeclaredAttachment
from storage.attachments import (
    AttachmentRefused,
    erase_pending_attachments,
    receive_part,
    upload_status_for,
)
from storage.blobs import BlobStore
from storage.db import Conn, one_connection
from storage.queries import Q
from sync.messages import MutationStatus
from tests.integration import test_attachment_erasure
from tests.integration.conftest import Backend
from tests.integration.test_attachment_erasure import (
    PHOTO,
    Org,
    attachment_view,
    erasing_while_another_org_uploads,
    new_report,
    one_chunk,
    org_holds,
    pending,
    redact,
    sha,
    start,
)
from tests.integration.test_push_locking import Phone, send
from tests.integration.test_push_locking import new_report as report_to_push

pytestmark = pytest.mark.db

# Two committed organisations, emptied afterwards: the erasure tests' fixture, under this name.
two_orgs = test_attachment_erasure.orgs


class Parked:
    """Wraps a blob store: the first call to one of ``methods`` stops until ``release`` is set,
    on entry or, with ``after``, once its work is done and before it returns."""

    def __init__(self, inner: BlobStore, *methods: str, after: bool = False) -> None:
        self._inner = inner
        self._methods = methods
        self._after = after
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._inner, name)
        if name not in self._methods or self.entered.is_set():
            return found

        async def parked(*args: Any) -> Any:
            if not self._after:
                await self._park()
            result = await found(*args)
            if self._after:
                await self._park()
            return result

        return parked

    async def _park(self) -> None:
        self.entered.set()
        await self.release.wait()

    def store(self) -> BlobStore:
        return cast(BlobStore, self)


async def until_parked(parked: Parked, task: asyncio.Task[Any]) -> None:
    """Return once the store is parked; fail if ``task`` ended without getting there."""
    entered = asyncio.create_task(parked.entered.wait())
    await asyncio.wait({entered, task}, return_when=asyncio.FIRST_COMPLETED)
    entered.cancel()
    assert parked.entered.is_set(), f"the finish never reached the parked step: {task}"


async def ends_without_waiting(pool: asyncpg.Pool, conn: Conn, task: asyncio.Task[Any]) -> bool:
    """True once ``task`` has ended; False as soon as ``conn``'s backend waits for any lock."""
    pid = conn.get_server_pid()
    async with pool.acquire() as watcher:
        while not task.done():
            waiting = await watcher.fetchval(
                "SELECT count(*) > 0 FROM pg_locks WHERE pid = $1 AND NOT granted", pid
            )
            if waiting:
                return False
            await asyncio.sleep(0.005)  # polling for a state, not timing anything
    return True


async def same_bucket_hash(conn: Conn, sha256: str) -> str:
    """Another hash in the bucket of ``sha256``, as `lock_blob_hash` computes buckets."""
    found: str = await conn.fetchval(
        "SELECT h FROM (SELECT md5(i::text) || md5((-i)::text) AS h"
        "               FROM generate_series(1, 100000) AS i) AS candidates"
        " WHERE hashtext(h) & 1023 = hashtext($1) & 1023 AND h <> $1 LIMIT 1",
        sha256,
    )
    return found


async def assert_every_record_has_its_bytes(pool: asyncpg.Pool, store: BlobStore) -> None:
    async with pool.acquire() as conn:
        recorded = {r["sha256"] for r in await conn.fetch("SELECT sha256 FROM blobs")}
    for sha256 in recorded:
        assert await store.exists(sha256), f"{sha256} is recorded as delivered but not stored"


async def stored_content(store: BlobStore, sha256: str) -> bytes:
    async with await store.open(sha256) as stream:
        return b"".join([chunk async for chunk in stream])


def finish_last_part(conn: Conn, store: BlobStore, org: Org) -> asyncio.Task[Any]:
    return asyncio.create_task(
        receive_part(one_connection(conn), store, org.device, sha(PHOTO), 0, one_chunk(PHOTO))
    )


async def test_a_push_sharing_the_bucket_goes_through_while_a_finish_verifies(
    pool: asyncpg.Pool, blob_backend: Backend, two_orgs: tuple[Org, Org]
) -> None:
    """A phone pushes a report declaring a file whose hash shares a bucket with one finishing
    at that moment. The push must not wait for the store to hash the other file (before, the
    finish held the bucket exclusively while it did)."""
    store = blob_backend.store
    a, _ = two_orgs
    async with pool.acquire() as conn:
        assert (await start(conn, store, a, PHOTO)).missing == (0,)
        neighbour = await same_bucket_hash(conn, sha(PHOTO))
    declared = DeclaredAttachment(sha256=neighbour, size_bytes=1000, media_type="image/jpeg")
    report = msgspec.structs.replace(report_to_push(), attachments=(declared,))
    phone = Phone(a.device)

    parked = Parked(store, "assemble", "complete")  # whichever reads and hashes the bytes
    async with pool.acquire() as finishing, pool.acquire() as pushing:
        finish = finish_last_part(finishing, parked.store(), a)
        try:
            await until_parked(parked, finish)
            bucket_locks = await pushing.fetchval(
                "SELECT count(*) FROM pg_locks WHERE pid = $1 AND locktype = 'advisory'",
                finishing.get_server_pid(),
            )
            push = asyncio.create_task(send(pushing, phone, [phone.create(report)]))
            pushed_while_verifying = await ends_without_waiting(pool, pushing, push)
        finally:
            parked.release.set()
        [result] = (await push).results
        assert (await finish).complete

    assert pushed_while_verifying
    assert bucket_locks == 0
    assert result.status is MutationStatus.APPLIED, result
    async with pool.acquire() as conn:
        assert await attachment_view(conn, a, report.id) == [(neighbour, False, False)]
        assert await org_holds(conn, a, PHOTO)
    assert await stored_content(store, sha(PHOTO)) == PHOTO


async def test_an_erasure_between_verifying_and_recording_does_not_lose_the_bytes(
    pool: asyncpg.Pool, blob_backend: Backend, two_orgs: tuple[Org, Org]
) -> None:
    """Org b's upload of a photo is verified (and, on S3, already copied into place) but not
    recorded when the erasure of org a's redacted copy of the same photo runs: nobody holds the
    bytes, so it deletes them, without waiting for the finish. The finish then takes the bucket,
    finds the bytes gone, stores them again from its verified copy, and records them."""
    store = blob_backend.store
    a, b = two_orgs
    live = await erasing_while_another_org_uploads(pool, store, a, b)

    parked = Parked(store, "assemble", after=True)
    async with pool.acquire() as erasing, pool.acquire() as uploading:
        finish = finish_last_part(uploading, parked.store(), b)
        try:
            await until_parked(parked, finish)
            erasure = asyncio.create_task(erase_pending_attachments(erasing, store))
            erased_meanwhile = await ends_without_waiting(pool, erasing, erasure)
            gone_before_recording = not await store.exists(sha(PHOTO))
        finally:
            parked.release.set()
        assert await erasure == 1
        assert (await finish).complete

    assert erased_meanwhile
    assert gone_before_recording
    assert await stored_content(store, sha(PHOTO)) == PHOTO
    async with pool.acquire() as conn:
        assert await attachment_view(conn, b, live) == [(sha(PHOTO), True, False)]
        assert not await org_holds(conn, a, PHOTO)
    await assert_every_record_has_its_bytes(pool, store)
    assert [n for n in blob_backend.contents() if not n.startswith("sha256/")] == []


async def test_a_redaction_and_erasure_while_the_finish_verifies_keep_nothing(
    pool: asyncpg.Pool, blob_backend: Backend, two_orgs: tuple[Org, Org]
) -> None:
    """The report is redacted and its erasure runs while its photo's upload is being verified.
    The erasure does not wait for the upload's row (the finish holds it, and would wait for the
    erasure's bucket: a deadlock) and leaves the upload to the finish, which re-checks under the
    bucket, discards the upload and any bytes it stored, and answers 410."""
    store = blob_backend.store
    a, _ = two_orgs
    async with pool.acquire() as conn:
        report = await new_report(conn, a, PHOTO)
        assert (await start(conn, store, a, PHOTO)).missing == (0,)

    parked = Parked(store, "assemble", after=True)
    async with pool.acquire() as erasing, pool.acquire() as uploading:
        finish = finish_last_part(uploading, parked.store(), a)
        try:
            await until_parked(parked, finish)
            await redact(pool, a, report)
            erasure = asyncio.create_task(erase_pending_attachments(erasing, store))
            erased_meanwhile = await ends_without_waiting(pool, erasing, erasure)
        finally:
            parked.release.set()
        assert await erasure == 1
        with pytest.raises(AttachmentRefused) as refused:
            await finish

    assert erased_meanwhile
    assert (refused.value.status, refused.value.reason) == (410, "attachment_erased")
    assert blob_backend.contents() == []
    async with pool.acquire() as conn:
        assert await conn.fetchval(Q.get_upload, a.id, sha(PHOTO)) is None
        assert not await org_holds(conn, a, PHOTO)
        assert await pending(conn) == []
        assert await attachment_view(conn, a, report) == [(sha(PHOTO), False, True)]


async def test_two_finishes_of_one_upload_store_one_blob_and_both_answer_complete(
    pool: asyncpg.Pool, blob_backend: Backend, two_orgs: tuple[Org, Org]
) -> None:
    """The last part and a status request (which finishes an upload whose parts are all in)
    arrive together: the second waits for the first's upload row, then finds the blob
    recorded. Retries afterwards answer the same without storing anything again."""
    store = blob_backend.store
    a, _ = two_orgs
    async with pool.acquire() as conn:
        report = await new_report(conn, a, PHOTO)
        assert (await start(conn, store, a, PHOTO)).missing == (0,)

    parked = Parked(store, "assemble")
    async with pool.acquire() as first_conn, pool.acquire() as second_conn:
        first = finish_last_part(first_conn, parked.store(), a)
        try:
            await until_parked(parked, first)
            second = asyncio.create_task(
                upload_status_for(second_conn, store, a.device, sha(PHOTO))
            )
            second_waited = not await ends_without_waiting(pool, second_conn, second)
        finally:
            parked.release.set()
        answers = [await first, await second]

    assert second_waited
    assert [s.complete for s in answers] == [True, True]
    assert [s.size_bytes for s in answers] == [len(PHOTO), len(PHOTO)]
    assert blob_backend.contents() == blob_backend.blob_names()  # no upload left behind
    assert len(blob_backend.blob_names()) == 1
    async with pool.acquire() as conn:
        assert (await upload_status_for(conn, store, a.device, sha(PHOTO))).complete
        assert (await finish_last_part(conn, store, a)).complete
        assert (await start(conn, store, a, PHOTO)).complete
        assert await attachment_view(conn, a, report) == [(sha(PHOTO), True, False)]
        assert await conn.fetchval("SELECT count(*) FROM blobs WHERE sha256 = $1", sha(PHOTO)) == 1
    assert len(blob_backend.blob_names()) == 1


async def test_two_organisations_finishing_the_same_file_at_once_share_one_blob(
    pool: asyncpg.Pool, blob_backend: Backend, two_orgs: tuple[Org, Org]
) -> None:
    """Both uploads are verified (on S3 both copy the bytes into place) before either records
    its copy; both are answered complete, one blob is stored, each organisation holds it."""
    store = blob_backend.store
    a, b = two_orgs
    async with pool.acquire() as conn:
        reports = [await new_report(conn, org, PHOTO) for org in (a, b)]
        for org in (a, b):
            assert (await start(conn, store, org, PHOTO)).missing == (0,)

    parked = [Parked(store, "assemble", after=True) for _ in range(2)]
    async with pool.acquire() as conn_a, pool.acquire() as conn_b:
        finishes = [
            finish_last_part(conn_a, parked[0].store(), a),
            finish_last_part(conn_b, parked[1].store(), b),
        ]
        try:
            for p, finish in zip(parked, finishes, strict=True):
                await until_parked(p, finish)
        finally:
            for p in parked:
                p.release.set()
        answers = [await f for f in finishes]

    assert [s.complete for s in answers] == [True, True]
    assert blob_backend.contents() == blob_backend.blob_names()
    assert len(blob_backend.blob_names()) == 1
    assert await stored_content(store, sha(PHOTO)) == PHOTO
    await assert_every_record_has_its_bytes(pool, store)
    async with pool.acquire() as conn:
        for org, report in zip((a, b), reports, strict=True):
            assert await attachment_view(conn, org, report) == [(sha(PHOTO), True, False)]


async def test_a_mismatched_upload_keeps_nothing_and_must_start_again(
    pool: asyncpg.Pool, blob_backend: Backend, two_orgs: tuple[Org, Org]
) -> None:
    store = blob_backend.store
    a, _ = two_orgs
    forged = bytes(len(PHOTO))  # the declared size, other bytes
    async with pool.acquire() as conn:
        assert (await start(conn, store, a, PHOTO)).missing == (0,)
        with pytest.raises(AttachmentRefused) as refused:
            await receive_part(
                one_connection(conn), store, a.device, sha(PHOTO), 0, one_chunk(forged)
            )
        assert refused.value.reason == "hash_mismatch"
        assert blob_backend.contents() == []
        assert await conn.fetchval(Q.get_upload, a.id, sha(PHOTO)) is None
        assert not await org_holds(conn, a, PHOTO)
        with pytest.raises(AttachmentRefused) as again:
            await receive_part(
                one_connection(conn), store, a.device, sha(PHOTO), 0, one_chunk(PHOTO)
            )
        assert (again.value.status, again.value.reason) == (404, "upload_not_found")
