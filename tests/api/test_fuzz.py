"""Property-based fuzzing of the whole HTTP API from its own OpenAPI document (schemathesis).

Every operation the app documents gets a few valid and a few invalid requests, sent as an
organisation admin to the real app served by uvicorn on a loopback port (schemathesis' transport is
synchronous, the ``client`` fixture is not). The properties: no request makes the server fail
(5xx), every error is an RFC 9457 ``application/problem+json`` document, and documented responses
match their documented schema.

Operations that fail today are listed in ``KNOWN_FAILURES`` with the reason; the test compares the
failing set with that list both ways, so a fix (or a new failure) shows up as a test failure.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import hypothesis
import pytest
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import response_schema_conformance

from cases.accounts import Role
from server.app import create_app
from server.settings import Settings
from tests.api.conftest import PASSWORD, Actor, make_actor
from tests.api.sync_support import Client

__all__: list[str] = []

pytestmark = pytest.mark.db

EXAMPLES_PER_MODE = 3
_STARTUP_SECONDS = 60.0
_REQUEST_SECONDS = 30.0
PROBLEM_JSON = "application/problem+json"
Operation = schemathesis.APIOperation[Any, Any, Any, Any]
FuzzCase = schemathesis.Case[Any]

# Server-sent events: a successful response is an endless stream.
STREAMING = frozenset({"GET /v1/alerts/stream"})
# "METHOD /path" -> why it fails; each entry is a server bug to fix (see the lead's report).
KNOWN_FAILURES: dict[str, str] = {}


@pytest.fixture(scope="module")
def live_url(api_settings: Settings) -> Iterator[str]:
    """The app (a second instance, on the session's database) served over loopback HTTP."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))  # a free port, held open so nothing else can take it
    config = uvicorn.Config(
        create_app(api_settings), lifespan="on", log_level="warning", ws="none", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + _STARTUP_SECONDS
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the app did not start")
        time.sleep(0.05)  # polling for start-up, with a deadline
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture
async def admin(client: Client, pool: asyncpg.Pool) -> Actor:
    # ``client`` also empties the database after the test, whatever the fuzzer created.
    return await make_actor(client, pool, Role.ORG_ADMIN)


def login(session: requests.Session, base_url: str, admin: Actor) -> dict[str, str]:
    r = session.post(
        f"{base_url}/v1/auth/login",
        json={"email": admin.email, "password": PASSWORD},
        timeout=_REQUEST_SECONDS,
    )
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


def violations(status: int, content_type: str, body: bytes) -> list[str]:
    found = []
    if status >= 500:
        found.append(f"server error {status}: {body[:300]!r}")
    media_type = content_type.split(";")[0].strip()
    if status >= 400 and media_type != PROBLEM_JSON:
        found.append(f"error {status} as {media_type or 'no content type'}")
    return found


def send(
    case: FuzzCase,
    session: requests.Session,
    base_url: str,
    headers: dict[str, str],
) -> list[str]:
    if case.operation.label in STREAMING:
        # The body never ends: look at the status and headers only, then hang up.
        kwargs = case.as_transport_kwargs(base_url=base_url, headers=headers)
        kwargs["timeout"] = _REQUEST_SECONDS
        with session.request(**kwargs, stream=True) as streamed:
            body = b"" if streamed.ok else streamed.content
            content_type = streamed.headers.get("content-type", "")
            return violations(streamed.status_code, content_type, body)
    response = case.call(
        base_url=base_url, session=session, headers=headers, timeout=_REQUEST_SECONDS
    )
    content_types = {k.lower(): v for k, v in response.headers.items()}.get("content-type", [])
    found = violations(response.status_code, ",".join(content_types), response.content)
    try:
        # Only the body's shape: statuses the document leaves out (401, 404, 422...) are the
        # problem+json errors checked above, so ``status_code_conformance`` would only add noise.
        case.validate_response(response, checks=[response_schema_conformance])
    except (Failure, FailureGroup) as exc:
        found.append(f"response schema: {str(exc)[:400]}")
    return found


def fuzz_operation(
    operation: Operation,
    mode: GenerationMode,
    session: requests.Session,
    base_url: str,
    headers: dict[str, str],
) -> list[str]:
    """Send the operation's generated requests; the first violations seen (not shrunk)."""
    seen: list[str] = []

    @hypothesis.settings(
        max_examples=EXAMPLES_PER_MODE,
        derandomize=True,
        database=None,
        deadline=None,
        # Shrinking would spend the budget; the report below names the request instead.
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def check(case: FuzzCase) -> None:
        for problem in send(case, session, base_url, headers):
            if len(seen) < 3:
                request = case.as_curl_command(base_url=base_url)
                seen.append(f"{mode.value}: {problem}; request: {request}")

    try:
        check()
    except hypothesis.errors.Unsatisfiable:
        # An operation without parameters or body has no invalid request to generate.
        if mode is not GenerationMode.NEGATIVE:
            raise
    return seen


def test_every_operation_answers_without_server_errors_and_with_problem_json(
    live_url: str, admin: Actor
) -> None:
    with requests.Session() as session:
        document = session.get(f"{live_url}/docs/openapi.json", timeout=_REQUEST_SECONDS)
        assert document.status_code == 200, document.text
        schema = schemathesis.openapi.from_dict(document.json())
        # NUL characters in text are tested on their own below
        # (``test_nul_in_text_is_a_client_error``); here they would only repeat that one case
        # in a different operation whenever generation shifts.
        schema.config.generation.update(allow_x00=False)
        operations: list[Operation] = []
        for result in schema.get_all_operations():
            if isinstance(result, Err):
                raise result.err()  # the app's own document must be usable as it is
            operations.append(result.ok())
        assert len(operations) > 20  # the whole API, not an empty document
        failing: dict[str, list[str]] = {}
        headers = login(session, live_url, admin)
        for operation in operations:
            # A fuzzed request (logout, revoking sessions...) may have ended the session.
            probe = session.get(
                f"{live_url}/v1/org/retention", headers=headers, timeout=_REQUEST_SECONDS
            )
            if probe.status_code == 401:
                headers = login(session, live_url, admin)
            found = [
                problem
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
                for problem in fuzz_operation(operation, mode, session, live_url, headers)
            ]
            if found:
                failing[operation.label] = found
    unexpected = {label: found for label, found in failing.items() if label not in KNOWN_FAILURES}
    assert not unexpected, "\n".join(f"{k}:\n  " + "\n  ".join(v) for k, v in unexpected.items())
    fixed = sorted(set(KNOWN_FAILURES) - set(failing))
    assert not fixed, f"these operations no longer fail: drop them from KNOWN_FAILURES: {fixed}"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/auth/login", {"email": "a\u0000@example.org", "password": "x" * 12}),
        ("POST", "/v1/partners", {"kind": "labour_inspectorate", "name": "Inspect\u0000orate"}),
    ],
)
async def test_nul_in_text_is_a_client_error(
    client: Client, admin: Actor, method: str, path: str, body: dict[str, Any]
) -> None:
    r = await client.request(method, path, json=body, headers=admin.headers)
    assert r.status_code < 500, r.text
    assert r.headers["content-type"].startswith(PROBLEM_JSON)
