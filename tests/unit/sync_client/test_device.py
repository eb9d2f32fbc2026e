"""The Device's loops against a fake server: push retries, held mutations, pull resets, uploads."""

from __future__ import annotations

import hashlib
import random
import uuid
from pathlib import Path

import httpx
import pytest

from sync.attachments import MIN_PART_BYTES
from sync.changes import ReportStatusChange
from sync.client.device import Device
from sync.client.outbox import PendingMutation
from sync.client.retry import RetryPolicy
from sync.client.transport import DeviceWiped, SyncTransport
from sync.messages import MutationStatus, ReportChanges
from tests.unit.sync.samples import sample_report
from tests.unit.sync_client.fake_server import NOW, FakeServer


async def _no_sleep(_: float) -> None:
    return None


async def _device(tmp_path: Path, server: FakeServer, **options: object) -> Device:
    http = httpx.AsyncClient(transport=server.transport())
    transport = SyncTransport("http://sync.test", http=http)
    device = Device.open(
        tmp_path / "phone",
        transport,
        sleep=_no_sleep,
        rng=random.Random(1),
        retry=RetryPolicy(attempts=4),
        **options,
    )
    if device.outbox.identity() is None:
        await device.enroll("ABCD-1234")
    return device


def _record(device: Device) -> uuid.UUID:
    report = sample_report(id=str(uuid.uuid4()), attachments=[])
    return device.record_report(report).report.id


async def test_push_empties_the_outbox_and_keeps_versions(tmp_path: Path) -> None:
    server = FakeServer()
    device = await _device(tmp_path, server)
    ids = [_record(device) for _ in range(5)]
    device.amend_report(ids[0], ReportChanges(severity=2))
    summary = await device.push()
    assert (summary.settled, summary.remaining, summary.batches) == (6, 0, 1)
    assert device.known_version(ids[0]) == 2
    local = device.outbox.report(ids[0])
    assert local is not None and local.report.severity == 2
    assert server.next_seq == 7


async def test_a_lost_answer_is_retried_with_the_same_bodies(tmp_path: Path) -> None:
    server = FakeServer()
    device = await _device(tmp_path, server)
    _record(device)
    _record(device)
    server.lose_answer.add("/v1/sync/push")  # the server commits, the phone never hears back
    summary = await device.push()
    pushes = [r for r in server.requests if r.url.path == "/v1/sync/push"]
    assert len(pushes) == 2
    assert (summary.failures, summary.settled, summary.remaining) == (1, 2, 0)
    # The fake asserts each resent body equals the first; every result was applied exactly once.
    assert {r.status for r in device.outbox.results()} == {MutationStatus.APPLIED}
    assert server.next_seq == 3


async def test_held_mutations_stay_until_their_predecessor_arrives(tmp_path: Path) -> None:
    server = FakeServer()
    rounds: list[int] = []

    def skip_first(pending: list[PendingMutation], limit: int) -> list[PendingMutation]:
        # A planner that leaves seq 1 out of the first batch, as a reordering network would.
        rounds.append(len(pending))
        return pending[1:limit] if len(rounds) == 1 else pending[:limit]

    device = await _device(tmp_path, server, plan_batch=skip_first)
    for _ in range(3):
        _record(device)
    summary = await device.push()
    assert summary.held == 2
    assert summary.remaining == 0
    assert rounds == [3, 3]  # the held ones were resent with seq 1 and settled
    assert [r.seq for r in device.outbox.results()] == [1, 2, 3]


async def test_the_outbox_survives_a_restart_between_record_and_push(tmp_path: Path) -> None:
    server = FakeServer()
    device = await _device(tmp_path, server)
    rid = _record(device)
    await device.aclose()
    reopened = await _device(tmp_path, server)  # same files: enrolled, outbox intact
    assert reopened.outbox.pending()[0].record_id == str(rid)
    assert _record(reopened) != rid
    assert [p.seq for p in reopened.outbox.pending()] == [1, 2]
    assert (await reopened.push()).settled == 2


async def test_pull_pages_and_a_reset_starts_again_from_no_cursor(tmp_path: Path) -> None:
    server = FakeServer()
    server.feed = [
        ReportStatusChange(version=1, changed_at=NOW, report_id=uuid.uuid4(), status="received")
        for _ in range(5)
    ]
    device = await _device(tmp_path, server, pull_limit=2)
    pending = _record(device)
    first = await device.pull()
    assert (first.pages, first.stored) == (3, 5)
    assert server.pull_cursors == [None, "2", "4"]
    server.reset_next_pull = True
    second = await device.pull()
    assert second.resets == 1
    assert server.pull_cursors[3:] == ["5", None, "2", "4"]
    assert second.stored == 5
    assert device.outbox.pending()[0].record_id == str(pending)


async def test_an_interrupted_upload_resumes_with_only_the_missing_parts(tmp_path: Path) -> None:
    server = FakeServer()
    device = await _device(tmp_path, server)
    data = random.Random(7).randbytes(3 * MIN_PART_BYTES + 1000)
    declared = device.attach(data, "video/mp4")
    assert declared.sha256 == hashlib.sha256(data).hexdigest()
    first = await device.upload_attachments(max_parts=2)
    assert (first.parts_sent, first.interrupted, first.completed) == (2, True, 0)
    server.lose_answer.add(f"/v1/sync/attachments/{declared.sha256}/parts/2")
    second = await device.upload_attachments()
    assert second.completed == 1
    assert server.part_puts == [0, 1, 2, 2, 3]  # part 2 resent once after the lost answer
    assert bytes(server.blobs[declared.sha256]) == data
    assert device.outbox.uploads() == {declared.sha256: True}
    assert (await device.upload_attachments()).parts_sent == 0


async def test_a_wipe_erases_the_outbox_and_the_credential(tmp_path: Path) -> None:
    server = FakeServer()
    device = await _device(tmp_path, server)
    _record(device)
    device.attach(b"photo bytes", "image/jpeg")
    server.credential = "revoked"  # the fake answers 401 then; make it a wipe instead

    def wipe(request: httpx.Request) -> httpx.Response:
        body = {"type": "urn:fairwatch:problem:device-revoked", "status": 403, "wipe": True}
        body["revoked_at"] = "2025-03-01T12:00:00Z"
        return httpx.Response(403, json=body)

    device.transport._http._transport = httpx.MockTransport(wipe)
    with pytest.raises(DeviceWiped):
        await device.push()
    assert device.wiped is not None
    assert device.outbox.identity() is None and device.outbox.depth() == 0
    assert device.transport.credential is None
    assert not device.media_dir.exists()


async def test_a_sibling_amends_from_the_pulled_report_version(tmp_path: Path) -> None:
    server = FakeServer()
    rid = uuid.uuid4()
    # Another phone of the same monitor made the report; its status was updated 5 times, the
    # report itself is at version 2: the amendment must be based on 2.
    server.feed = [
        ReportStatusChange(
            version=5, changed_at=NOW, report_id=rid, report_version=2, status="triage"
        )
    ]
    device = await _device(tmp_path, server)
    with pytest.raises(KeyError):
        device.amend_report(rid, ReportChanges(severity=1))
    await device.pull()
    assert device.known_version(rid) == 2
    assert device.amend_report(rid, ReportChanges(severity=1)).base_version == 2
