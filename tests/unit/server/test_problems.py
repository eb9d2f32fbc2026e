"""Problem details for failures that are not the client's fault but not a bug either."""

from __future__ import annotations

import asyncpg
from litestar import Litestar, get
from litestar.testing import TestClient

from server.problems import exception_handlers


@get("/one", sync_to_thread=False)
def deadlock() -> None:
    raise asyncpg.exceptions.DeadlockDetectedError("deadlock detected")


@get("/two", sync_to_thread=False)
def serialization() -> None:
    raise asyncpg.exceptions.SerializationError("could not serialize access")


def test_a_rolled_back_transaction_is_a_retryable_503_not_a_500() -> None:
    app = Litestar([deadlock, serialization], exception_handlers=exception_handlers)
    with TestClient(app) as client:
        for path in ("/one", "/two"):
            r = client.get(path)
            assert r.status_code == 503, r.text
            assert r.headers["content-type"].startswith("application/problem+json")
            assert r.headers["retry-after"] == "1"
            body = r.json()
            assert body["type"] == "urn:fairwatch:problem:contention"
            assert "deadlock" not in r.text and "serialize" not in r.text  # nothing internal


@get("/three", sync_to_thread=False)
def out_of_shared_memory() -> None:
    # What PostgreSQL answers when its lock table is full (SQLSTATE 53200).
    raise asyncpg.exceptions.OutOfMemoryError("out of shared memory")


@get("/four", sync_to_thread=False)
def too_many_connections() -> None:
    raise asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already")


def test_a_database_short_of_resources_is_a_retryable_503_not_a_500() -> None:
    app = Litestar(
        [out_of_shared_memory, too_many_connections], exception_handlers=exception_handlers
    )
    with TestClient(app) as client:
        for path in ("/three", "/four"):
            r = client.get(path)
            assert r.status_code == 503, r.text
            assert r.headers["content-type"].startswith("application/problem+json")
            assert int(r.headers["retry-after"]) > 0
            assert r.json()["type"] == "urn:fairwatch:problem:unavailable"
            assert "memory" not in r.text and "clients" not in r.text  # nothing internal
