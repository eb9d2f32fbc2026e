"""RFC 9457 problem details: the one place where every error becomes an HTTP answer.

Each kind of error has a stable ``type`` URI (``urn:fairwatch:problem:<slug>``, listed in
docs/problems.md) so clients branch on it, never on the human ``title`` or ``detail``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import asyncpg
import msgspec
from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import ExceptionHandlersMap

from storage.attachments import AttachmentRefused
from storage.errors import AlreadyExists, NotFound, StaleVersion, StorageUnavailable
from storage.keyring import MasterKeyUnavailable

__all__ = [
    "FieldError",
    "Problem",
    "ProblemError",
    "exception_handlers",
    "invalid_request",
    "problem_type",
]

PROBLEM_JSON = "application/problem+json"
_log = logging.getLogger("fairwatch.errors")
_MISSING_FIELD = re.compile(r"missing required field `([^`]+)`")


def problem_type(slug: str) -> str:
    return f"urn:fairwatch:problem:{slug}"


class FieldError(msgspec.Struct, frozen=True, omit_defaults=True):
    field: str
    message: str
    source: str | None = None


class Problem(msgspec.Struct, frozen=True, omit_defaults=True):
    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = None
    extensions: dict[str, Any] | None = None

    def to_body(self) -> dict[str, Any]:
        # RFC 9457 puts extension members at the top level of the object.
        body = msgspec.to_builtins(self)
        body.update(body.pop("extensions", None) or {})
        return body  # type: ignore[no-any-return]


class ProblemError(Exception):
    """Raised by route code for an error that has no domain exception of its own."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        errors: list[FieldError] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or title)
        self.problem = Problem(
            type=problem_type(slug),
            title=title,
            status=status,
            detail=detail,
            errors=errors,
            extensions=extensions or None,
        )
        self.headers = headers or {}


def invalid_request(
    detail: str | None = None, errors: list[FieldError] | None = None
) -> ProblemError:
    """A 422 `validation` problem for a check route code makes after decoding, shaped like the
    decoder's own (`_handle_validation`)."""
    return ProblemError(422, "validation", "The request has invalid fields", detail, errors=errors)


def _respond(
    request: Request[Any, Any, Any], problem: Problem, headers: dict[str, str] | None = None
) -> Response[Any]:
    body = msgspec.structs.replace(problem, instance=request.url.path).to_body()
    return Response(
        content=body, status_code=problem.status, media_type=PROBLEM_JSON, headers=headers
    )


def _simple(status: int, slug: str, title: str, detail: str | None = None) -> Problem:
    return Problem(type=problem_type(slug), title=title, status=status, detail=detail)


_HTTP_SLUGS: dict[int, tuple[str, str]] = {
    400: ("malformed-request", "The request could not be read"),
    401: ("unauthenticated", "Authentication required"),
    403: ("forbidden", "Not allowed for your role"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Cannot produce an acceptable representation"),
    409: ("conflict", "Conflict"),
    413: ("body-too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    429: ("rate-limited", "Too many requests"),
    503: ("unavailable", "Service unavailable"),
}


def _handle_problem_error(request: Request[Any, Any, Any], exc: ProblemError) -> Response[Any]:
    return _respond(request, exc.problem, exc.headers)


def _handle_validation(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    errors = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(item, dict):
            message = str(item.get("message", "invalid"))
            field = str(item.get("key", ""))
            if field in ("", "data") and (missing := _MISSING_FIELD.search(message)):
                field = missing[1]  # msgspec names a missing field only in its message
            raw = item.get("source")  # Litestar's ParamType enum for parameters
            source = None if raw is None else str(getattr(raw, "value", raw))
            errors.append(FieldError(field=field, message=message, source=source))
    problem = Problem(
        type=problem_type("validation"),
        title="The request has invalid fields",
        status=422,
        detail="; ".join(f"{e.field}: {e.message}" for e in errors) or None,
        errors=errors,
    )
    return _respond(request, problem)


def _handle_http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    if status >= 500:
        return _handle_internal(request, exc)
    slug, title = _HTTP_SLUGS.get(status, ("client-error", "The request was not accepted"))
    detail = exc.detail if exc.detail and exc.detail != title else None
    if isinstance(exc, NotAuthorizedException):
        detail = detail or "send a valid bearer token in the Authorization header"
    elif isinstance(exc, PermissionDeniedException):
        detail = detail or None
    elif status == 400:
        # Litestar reports undecodable bodies as a 400 whose detail carries the decoder's message.
        slug, title = "malformed-body", "The request body is not valid JSON or MessagePack"
    headers = dict(exc.headers or {})
    return _respond(request, _simple(status, slug, title, detail), headers)


def _handle_not_found(request: Request[Any, Any, Any], exc: NotFound) -> Response[Any]:
    return _respond(request, _simple(404, "not-found", "Not found", f"{exc.kind} not found"))


def _handle_exists(request: Request[Any, Any, Any], exc: AlreadyExists) -> Response[Any]:
    problem = Problem(
        type=problem_type("already-exists"),
        title="Already exists",
        status=409,
        detail=str(exc),
        extensions={"field": exc.field},
    )
    return _respond(request, problem)


def _handle_stale(request: Request[Any, Any, Any], exc: StaleVersion) -> Response[Any]:
    problem = Problem(
        type=problem_type("stale-version"),
        title="The object was changed by someone else",
        status=409,
        detail=str(exc),
        extensions={"current_version": exc.current_version},
    )
    return _respond(request, problem)


def _handle_unavailable(request: Request[Any, Any, Any], exc: StorageUnavailable) -> Response[Any]:
    _log.error("storage unavailable: %s", exc)
    return _respond(
        request,
        _simple(503, "unavailable", "Service unavailable", "storage is unreachable, retry later"),
        {"Retry-After": "5"},
    )


def _handle_undecodable(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    # The JSON decoder gives up on absurd nesting (RecursionError) and on strings that are not
    # UTF-8: both are the client's bytes, not our bug.
    return _respond(
        request,
        _simple(400, "malformed-body", "The request body cannot be decoded", type(exc).__name__),
    )


def _handle_unstorable_text(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    # PostgreSQL text cannot hold U+0000; the statement failed, so nothing was written.
    return _respond(
        request,
        Problem(
            type=problem_type("validation"),
            title="The request has invalid fields",
            status=422,
            detail="text fields must not contain the NUL character (U+0000)",
        ),
    )


def _handle_contention(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    # A deadlock or serialization failure rolled the whole transaction back: nothing was written,
    # and the same request sent again will go through (pushes are exactly-once).
    _log.warning("transaction rolled back (%s) on %s", type(exc).__name__, request.url.path)
    return _respond(
        request,
        _simple(
            503,
            "contention",
            "Busy, nothing was saved",
            "the request collided with a concurrent one and was rolled back; send it again",
        ),
        {"Retry-After": "1"},
    )


def _handle_short_of_resources(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    # SQLSTATE class 53: out of (shared) memory, too many connections, disk full. The statement
    # failed and its transaction with it, so nothing was written; the same request can go through
    # once the load passes. Not the client's fault, and not a bug to answer with a 500.
    _log.error("database short of resources on %s: %s", request.url.path, exc)
    return _respond(
        request,
        _simple(503, "unavailable", "Service unavailable", "the server is overloaded, retry later"),
        {"Retry-After": "5"},
    )


def _handle_internal(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    # The traceback goes to the log with the request id; the client learns nothing internal.
    _log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    problem = _simple(
        HTTP_500_INTERNAL_SERVER_ERROR,
        "internal",
        "Internal error",
        "the error was logged; quote the X-Request-ID header when reporting it",
    )
    return _respond(request, problem)


def _handle_attachment(request: Request[Any, Any, Any], exc: AttachmentRefused) -> Response[Any]:
    slug = exc.reason.replace("_", "-")
    return _respond(request, _simple(exc.status, slug, "The attachment was refused", exc.detail))


def _handle_master_key(request: Request[Any, Any, Any], exc: MasterKeyUnavailable) -> Response[Any]:
    _log.error("encryption key unavailable: %s", exc)
    return _respond(
        request,
        _simple(503, "unavailable", "Service unavailable", "an encryption key is not configured"),
    )


exception_handlers: ExceptionHandlersMap = {
    asyncpg.exceptions.CharacterNotInRepertoireError: _handle_unstorable_text,
    asyncpg.exceptions.UntranslatableCharacterError: _handle_unstorable_text,
    asyncpg.exceptions.TransactionRollbackError: _handle_contention,
    asyncpg.exceptions.InsufficientResourcesError: _handle_short_of_resources,
    RecursionError: _handle_undecodable,
    UnicodeDecodeError: _handle_undecodable,
    AttachmentRefused: _handle_attachment,
    MasterKeyUnavailable: _handle_master_key,
    ProblemError: _handle_problem_error,
    ValidationException: _handle_validation,
    HTTPException: _handle_http,
    NotFound: _handle_not_found,
    AlreadyExists: _handle_exists,
    StaleVersion: _handle_stale,
    StorageUnavailable: _handle_unavailable,
    Exception: _handle_internal,
}
