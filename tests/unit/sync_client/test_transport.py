"""The client transport: encodings and compression on the wire, problem documents, wipe."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import msgspec
import pytest

from sync.client.transport import (
    BodyTooLarge,
    Compression,
    DeviceWiped,
    Forbidden,
    InvalidRequest,
    ProblemResponse,
    SyncTransport,
    TransportFailure,
    Unauthenticated,
    compress,
    decompress,
)
from sync.codec import WireFormat, decode, decode_mutation, encode, format_for_content_type
from sync.messages import (
    PullRequest,
    PushRequest,
    PushResponse,
    WipeInstruction,
)
from tests.unit.sync.samples import NOW, create_report

Handler = Callable[[httpx.Request], httpx.Response]


def _transport(handler: Handler, **options: Any) -> SyncTransport:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return SyncTransport("http://sync.test/", http=http, credential="k" * 43, **options)


@pytest.mark.parametrize("fmt", list(WireFormat))
@pytest.mark.parametrize("how", list(Compression))
async def test_push_round_trips_in_every_format_and_compression(
    fmt: WireFormat, how: Compression
) -> None:
    seen: list[PushRequest] = []
    mutation = create_report(1)

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer " + "k" * 43
        assert request.headers.get("content-encoding", "identity") == how.value
        wire = format_for_content_type(request.headers["content-type"])
        assert wire is fmt
        body = decompress(request.content, how)
        push = decode(PushRequest, body, fmt)
        seen.append(push)
        assert decode_mutation(push.mutations[0], fmt) == mutation
        answer = PushResponse(results=(), next_expected_seq=2, received_at=NOW)
        media = "application/json" if fmt is WireFormat.JSON else "application/msgpack"
        return httpx.Response(200, content=encode(answer, fmt), headers={"content-type": media})

    transport = _transport(handler, fmt=fmt, compression=how)
    request = PushRequest(
        device_id=uuid.uuid4(),
        sent_at=NOW,
        mutations=(msgspec.Raw(encode(mutation, fmt)),),
    )
    response = await transport.push(request)
    assert response.next_expected_seq == 2
    assert [p.device_id for p in seen] == [request.device_id]
    await transport.aclose()


def test_zstd_and_gzip_actually_compress() -> None:
    body = encode(create_report(1), WireFormat.JSON) * 20
    for how in (Compression.GZIP, Compression.ZSTD):
        packed = compress(body, how)
        assert len(packed) < len(body) // 4
        assert decompress(packed, how) == body


def _problem(status: int, **extra: object) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        body = {"type": f"urn:fairwatch:problem:s{status}", "title": "t", "status": status}
        body.update(extra)
        return httpx.Response(
            status, json=body, headers={"content-type": "application/problem+json"}
        )

    return handler


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (401, Unauthenticated, False),
        (403, Forbidden, False),
        (413, BodyTooLarge, False),
        (422, InvalidRequest, False),
        (429, ProblemResponse, True),
        (503, ProblemResponse, True),
    ],
)
async def test_problem_documents_become_typed_errors(
    status: int, kind: type[ProblemResponse], retryable: bool
) -> None:
    transport = _transport(_problem(status, detail="why"))
    with pytest.raises(kind) as caught:
        await transport.pull(PullRequest(device_id=uuid.uuid4()))
    assert type(caught.value) is kind
    assert caught.value.status == status
    assert caught.value.type == f"urn:fairwatch:problem:s{status}"
    assert caught.value.detail == "why"
    assert caught.value.retryable is retryable


async def test_retry_after_and_non_json_errors_are_read() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>bad gateway</html>", headers={"retry-after": "7"})

    with pytest.raises(ProblemResponse) as caught:
        await _transport(handler).pull(PullRequest(device_id=uuid.uuid4()))
    assert (caught.value.status, caught.value.retry_after) == (502, 7.0)
    assert "bad gateway" in str(caught.value.detail)


async def test_a_wipe_instruction_calls_the_hook_then_raises() -> None:
    wiped: list[WipeInstruction] = []
    handler = _problem(403, wipe=True, reason="device_lost", revoked_at="2025-03-01T12:00:00Z")
    transport = _transport(handler, on_wipe=wiped.append)
    with pytest.raises(DeviceWiped) as caught:
        await transport.upload_status("a" * 64)
    assert caught.value.instruction == WipeInstruction(reason="device_lost", revoked_at=NOW)
    assert wiped == [caught.value.instruction]


async def test_a_dropped_connection_is_a_retryable_transport_failure() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError("connection reset", request=request)

    with pytest.raises(TransportFailure) as caught:
        await _transport(handler).pull(PullRequest(device_id=uuid.uuid4()))
    assert caught.value.retryable


async def test_an_unreadable_success_is_not_retried() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"unexpected": True})

    with pytest.raises(Exception, match="unreadable PullResponse") as caught:
        await _transport(handler).pull(PullRequest(device_id=uuid.uuid4()))
    assert not getattr(caught.value, "retryable", True)
