"""A tiny in-memory stand-in for the sync endpoints, served through ``httpx.MockTransport``.

It implements just enough of the protocol (stored final results, held mutations, paged pulls,
resumable parts) to test the client's loops; the real rules are tested in tests/unit/sync.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from typing import Any

import httpx
import msgspec

from sync.attachments import UploadRequest, missing_parts, part_size_for, upload_status
from sync.changes import Change
from sync.client.transport import Compression, decompress
from sync.codec import WireFormat, decode, decode_mutation, encode, format_for_content_type
from sync.messages import (
    AmendReport,
    CreateReport,
    EnrollResponse,
    MutationResult,
    MutationStatus,
    PullRequest,
    PullResponse,
    PushRequest,
    PushResponse,
)

__all__ = ["NOW", "FakeServer"]

NOW = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)


class FakeServer:
    def __init__(self) -> None:
        self.device_id = uuid.uuid4()
        self.credential = "c" * 43
        self.next_seq = 1
        self.results: dict[uuid.UUID, MutationResult] = {}
        self.bodies: dict[uuid.UUID, bytes] = {}  # mutation id -> body without ``attempt``
        self.held: dict[int, Any] = {}
        self.versions: dict[uuid.UUID, int] = {}
        self.feed: list[Change] = []
        self.reset_next_pull = False
        self.pull_cursors: list[str | None] = []
        self.uploads: dict[str, tuple[int, set[int]]] = {}
        self.blobs: dict[str, bytearray] = {}
        self.part_puts: list[int] = []
        self.requests: list[httpx.Request] = []
        # Paths whose next request is processed and then its answer lost (a dropped connection).
        self.lose_answer: set[str] = set()

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        fmt = format_for_content_type(request.headers.get("content-type")) or WireFormat.JSON
        how = Compression(request.headers.get("content-encoding", "identity"))
        body = decompress(request.content, how)
        if path == "/v1/sync/enroll":
            answer: Any = EnrollResponse(
                device_id=self.device_id,
                credential=self.credential,
                monitor_id=uuid.uuid4(),
                enrolled_at=NOW,
            )
        elif request.headers.get("authorization") != f"Bearer {self.credential}":
            return httpx.Response(401, json={"type": "urn:x:unauthenticated", "status": 401})
        elif path == "/v1/sync/push":
            answer = self._push(decode(PushRequest, body, fmt), fmt)
        elif path == "/v1/sync/pull":
            answer = self._pull(decode(PullRequest, body, fmt))
        elif path == "/v1/sync/attachments":
            req = decode(UploadRequest, body, fmt)
            self.uploads.setdefault(req.sha256, (req.size_bytes, set()))
            answer = self._status(req.sha256)
        else:
            sha, index = path.split("/")[4], int(path.split("/")[6])
            size, received = self.uploads[sha]
            part = part_size_for(size)
            blob = self.blobs.setdefault(sha, bytearray(size))
            blob[index * part : index * part + len(body)] = body
            received.add(index)
            self.part_puts.append(index)
            answer = self._status(sha)
        if path in self.lose_answer:
            self.lose_answer.discard(path)
            raise httpx.ReadError("connection dropped after the server committed")
        return httpx.Response(200, content=encode(answer, fmt), headers={"content-type": "x"})

    def _status(self, sha: str) -> Any:
        size, received = self.uploads[sha]
        part = part_size_for(size)
        done = not missing_parts(size, part, received)
        verified = done and hashlib.sha256(self.blobs.get(sha, b"")).hexdigest() == sha
        return upload_status(sha, size, part, received, verified=verified)

    def _push(self, request: PushRequest, fmt: WireFormat) -> PushResponse:
        answers = []
        for raw in request.mutations:
            mutation = decode_mutation(raw, fmt)
            plain = msgspec.json.encode(msgspec.structs.replace(mutation, attempt=0))
            if mutation.mutation_id in self.bodies:
                assert self.bodies[mutation.mutation_id] == plain, "a resend changed the body"
            self.bodies[mutation.mutation_id] = plain
            if mutation.mutation_id in self.results:
                answers.append(self.results[mutation.mutation_id])
                continue
            if mutation.seq > self.next_seq:
                self.held[mutation.seq] = mutation
                answers.append(
                    MutationResult(
                        mutation_id=mutation.mutation_id,
                        seq=mutation.seq,
                        status=MutationStatus.HELD,
                        received_at=NOW,
                    )
                )
                continue
            answers.append(self._apply(mutation))
            while self.next_seq in self.held:
                self._apply(self.held.pop(self.next_seq))
        return PushResponse(
            results=tuple(answers), next_expected_seq=self.next_seq, received_at=NOW
        )

    def _apply(self, mutation: Any) -> MutationResult:
        if isinstance(mutation, CreateReport):
            rid = mutation.report.id
            self.versions[rid] = 1
        else:
            assert isinstance(mutation, AmendReport)
            rid = mutation.report_id
            self.versions[rid] += 1
        result = MutationResult(
            mutation_id=mutation.mutation_id,
            seq=mutation.seq,
            status=MutationStatus.APPLIED,
            record_id=rid,
            version=self.versions[rid],
            received_at=NOW,
        )
        self.results[mutation.mutation_id] = result
        self.next_seq = mutation.seq + 1
        return result

    def _pull(self, request: PullRequest) -> PullResponse:
        self.pull_cursors.append(request.cursor)
        if self.reset_next_pull:
            self.reset_next_pull = False
            return PullResponse(reset_required=True, server_time=NOW)
        start = int(request.cursor or 0)
        page = self.feed[start : start + request.limit]
        end = start + len(page)
        return PullResponse(
            changes=tuple(page),
            has_more=end < len(self.feed),
            next_cursor=str(end),
            server_time=NOW,
        )
