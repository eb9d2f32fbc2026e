"""The ``fairwatch`` command as a user runs it: real processes, real database."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.db


def run_cli(*args: str, env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FAIRWATCH_")}
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        env={**clean, "FAIRWATCH_LOG_JSON": "false", **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_bad_setting_is_one_clear_line(tmp_path: Path) -> None:
    result = run_cli("check", env={"FAIRWATCH_DATABASE_URL": "mysql://nope"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "FAIRWATCH_DATABASE_URL" in lines[0]
    assert "Traceback" not in result.stderr


def test_check_migrate_and_accounts(database_dsn: str, tmp_path: Path) -> None:
    env = {"FAIRWATCH_DATABASE_URL": database_dsn, "FAIRWATCH_DATA_DIR": str(tmp_path)}
    check = run_cli("check", env=env)
    assert check.returncode == 0, check.stderr
    assert "database: ok" in check.stdout
    assert "blob store: ok (local)" in check.stdout
    migrate = run_cli("migrate", env=env)
    assert migrate.returncode == 0, migrate.stderr
    assert "up to date" in migrate.stdout
    slug = f"cli-{os.getpid()}"
    org = run_cli("create-org", "--slug", slug, "--name", "CLI org", env=env)
    assert org.returncode == 0, org.stderr
    again = run_cli("create-org", "--slug", slug, "--name", "CLI org", env=env)
    assert again.returncode == 1
    assert "already exists" in again.stderr
    user = run_cli(
        "create-user", "--org", slug, "--email", f"{slug}@example.org", "--name", "Cli",
        "--role", "case_manager", "--password-stdin",
        env=env, stdin="a sufficiently long passphrase\n",
    )  # fmt: skip
    assert user.returncode == 0, user.stderr
    assert "created" in user.stdout
    weak = run_cli(
        "create-user", "--org", slug, "--email", f"w{slug}@example.org", "--name", "W",
        "--role", "analyst", "--password-stdin",
        env=env, stdin="short\n",
    )  # fmt: skip
    assert weak.returncode == 1
    assert "password" in weak.stderr


def test_check_fails_when_database_is_unreachable(tmp_path: Path) -> None:
    env = {
        "FAIRWATCH_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
        "FAIRWATCH_DATA_DIR": str(tmp_path),
    }
    result = run_cli("check", env=env)
    assert result.returncode == 1
    assert "database: unreachable" in result.stdout


async def test_two_migrate_processes_at_once(pg_server_dsn: str, tmp_path: Path) -> None:
    from storage.db import connect, with_database
    from storage.migrate import load_migrations
    from tests.conftest import create_scratch_database, drop_database

    name = await create_scratch_database(pg_server_dsn, "fairwatch_cli")
    dsn = with_database(pg_server_dsn, name)
    try:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("FAIRWATCH_")}
        env = {**clean, "FAIRWATCH_DATABASE_URL": dsn, "FAIRWATCH_DATA_DIR": str(tmp_path)}
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable, "-m", "server", "migrate",
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
            for _ in range(2)
        ]  # fmt: skip
        outputs = await asyncio.wait_for(
            asyncio.gather(*(p.communicate() for p in procs)), timeout=120
        )
        assert [p.returncode for p in procs] == [0, 0], outputs
        said = sorted(out.decode() for out, _ in outputs)
        assert "up to date" in said[1]  # the one that waited found nothing left to do
        assert "0001_foundation" in said[0]
        conn = await connect(dsn)
        try:
            count = await conn.fetchval("SELECT count(*) FROM schema_migrations")
        finally:
            await conn.close()
        assert count == len(load_migrations())
    finally:
        await drop_database(pg_server_dsn, name)
