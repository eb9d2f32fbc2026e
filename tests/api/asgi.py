"""A raw ASGI GET scope, for tests that read a response as the server sends it (streams)."""

from __future__ import annotations

from typing import Any


def get_scope(url: str, headers: dict[str, str]) -> dict[str, Any]:
    """The scope of `GET url` (path and query) from a test client, with these headers."""
    path, _, query = url.partition("?")
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"testserver")]
        + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }
