"""A 60 MB attachment, interrupted twice, leaves the server's peak memory flat.

The server runs as its own process (``python -m server serve --role api``), so its peak resident
memory (VmHWM) is the server's alone: it must not grow with the size of the file.
"""

from __future__ import annotations

import hashlib
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from cases.accounts import Role
from server.passwords import hash_password
from storage.accounts import OrgRepository, UserRepository

pytestmark = [pytest.mark.e2e, pytest.mark.db]

PASSWORD = "a memorable passphrase"


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.fixture
def server_process(database_dsn: str, tmp_path: Path) -> Iterator[tuple[str, int]]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FAIRWATCH_")},
        "FAIRWATCH_DATABASE_URL": database_dsn,
        "FAIRWATCH_DATA_DIR": str(tmp_path),
        "FAIRWATCH_CREATE_DEMO": "false",
        "FAIRWATCH_LOG_LEVEL": "WARNING",
        "FAIRWATCH_RATE_ANONYMOUS_PER_MINUTE": "0",
        "FAIRWATCH_RATE_STAFF_PER_MINUTE": "0",
        "FAIRWATCH_RATE_DEVICE_PER_MINUTE": "0",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "server", "serve", "--role", "api", "--no-migrate",
         "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)  # polling for start-up, not timing anything
        yield base, process.pid
    finally:
        process.terminate()
        process.wait(timeout=20)


def _part(seed: int, index: int, size: int, part_size: int) -> bytes:
    return random.Random(seed * 1000 + index).randbytes(min(part_size, size - index * part_size))


async def test_server_memory_is_flat_in_the_file_size(
    server_process: tuple[str, int], pool: asyncpg.Pool
) -> None:
    base, pid = server_process
    email = f"mem-{os.getpid()}@example.org"
    async with pool.acquire() as conn:
        org = await OrgRepository(conn).add(f"mem-{os.getpid()}", "Memory test")
        await UserRepository(conn).add(
            org.id, email, "M", Role.CASE_MANAGER, hash_password(PASSWORD)
        )
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        token = (
            await http.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
        ).json()["token"]
        staff = {"Authorization": f"Bearer {token}"}
        monitor = (
            await http.post("/v1/monitors", json={"display_name": "m"}, headers=staff)
        ).json()["id"]
        code = (await http.post(f"/v1/monitors/{monitor}/enrollment-codes", headers=staff)).json()[
            "code"
        ]
        credential = (await http.post("/v1/sync/enroll", json={"code": code})).json()["credential"]
        device = {"Authorization": f"Bearer {credential}"}

        async def upload(seed: int, size: int, interruptions: int) -> int:
            probe = {"sha256": f"{seed:064x}", "size_bytes": size, "media_type": "video/mp4"}
            plan = await http.post("/v1/sync/attachments", json=probe, headers=device)
            assert plan.status_code == 200, plan.text
            part_size: int = plan.json()["part_size"]
            count = -(-size // part_size)
            digest = hashlib.sha256()
            for i in range(count):
                digest.update(_part(seed, i, size, part_size))
            sha = digest.hexdigest()
            declared = {"sha256": sha, "size_bytes": size, "media_type": "video/mp4"}
            sent = 0
            r = None
            for attempt in range(interruptions + 1):
                status = (
                    await http.post("/v1/sync/attachments", json=declared, headers=device)
                ).json()
                todo = status["missing"] if attempt == interruptions else status["missing"][:2]
                for i in todo:
                    body = _part(seed, i, size, part_size)
                    url = f"/v1/sync/attachments/{sha}/parts/{i}"
                    r = await http.put(url, content=body, headers=device)
                    assert r.status_code == 200, r.text
                    sent += 1
            assert r is not None
            assert r.json()["complete"] is True
            assert sent == count  # resumed uploads never resend a finished part
            return part_size

        part_size = await upload(seed=1, size=9 * 1024 * 1024, interruptions=0)  # warm up
        before = _peak_rss(pid)
        await upload(seed=2, size=60 * 1024 * 1024 + 99, interruptions=2)
        after = _peak_rss(pid)
    assert after - before < 2 * part_size, (before, after)
