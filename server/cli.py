"""The ``fairwatch`` command (also ``python -m server``): serve, migrate, accounts, checks."""

from __future__ import annotations

import argparse
import asyncio
import gc
import getpass
import os
import secrets
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from cases.accounts import Role
from server.logs import configure_logging
from server.passwords import hash_password, password_problem
from server.settings import Settings, SettingsError, load_settings

__all__ = ["main"]

ROLES = ("api", "worker", "scheduler", "all")


class CommandError(Exception):
    """A failure to report as one line, without a traceback."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fairwatch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the service (API, worker, scheduler)")
    serve.add_argument("--role", choices=ROLES, default="all")
    serve.add_argument("--host", default=None, help="overrides FAIRWATCH_HOST")
    serve.add_argument("--port", type=int, default=None, help="overrides FAIRWATCH_PORT")
    serve.add_argument("--no-migrate", action="store_true", help="do not apply migrations first")

    sub.add_parser("migrate", help="apply pending database migrations")

    org = sub.add_parser("create-org", help="create an organisation")
    org.add_argument("--slug", required=True)
    org.add_argument("--name", required=True)

    user = sub.add_parser("create-user", help="create a staff account")
    user.add_argument("--org", required=True, help="organisation slug")
    user.add_argument("--email", required=True)
    user.add_argument("--name", required=True, help="display name")
    user.add_argument("--role", choices=[r.value for r in Role], required=True)
    user.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )

    sub.add_parser("check", help="report whether the database and blob store are reachable")

    sim = sub.add_parser(
        "simulate",
        help="drive a running server with a fleet of simulated phones (see --help)",
        add_help=False,
    )
    sim.add_argument("args", nargs=argparse.REMAINDER)
    scan = sub.add_parser(
        "scan-files",
        help="run the space-time scan on SaTScan-format case/coordinates files (see --help)",
        add_help=False,
    )
    scan.add_argument("args", nargs=argparse.REMAINDER)

    from server.cli_protection import register as register_protection

    register_protection(sub)

    reg = sub.add_parser("registry", help="registry maintenance")
    reg_sub = reg.add_subparsers(dest="registry_command", required=True)
    imp = reg_sub.add_parser("import", help="import a licensing authority's list (CSV)")
    imp.add_argument("csv_file", type=Path)
    scope = imp.add_mutually_exclusive_group(required=True)
    scope.add_argument("--org", help="organisation slug to import into")
    scope.add_argument(
        "--shared", action="store_true", help="import into the registry every organisation reads"
    )
    return parser


async def _database(settings: Settings) -> str:
    from server.runtime import resolve_database_url

    return await resolve_database_url(settings)


async def _migrate(settings: Settings) -> None:
    from server.runtime import migrate_database

    applied = await migrate_database(await _database(settings))
    names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied) or "none (up to date)"
    print(f"migrations applied: {names}")


async def _create_org(settings: Settings, slug: str, name: str) -> None:
    from storage.accounts import OrgRepository
    from storage.db import connect

    conn = await connect(await _database(settings))
    try:
        org = await OrgRepository(conn).add(slug, name)
    finally:
        await conn.close()
    print(f"organisation {org.slug} created (id {org.id})")


async def _create_user(
    settings: Settings, org_slug: str, email: str, name: str, role: Role, password: str | None
) -> None:
    from storage.accounts import OrgRepository, UserRepository
    from storage.db import connect

    generated = password is None
    if password is None:
        password = secrets.token_urlsafe(12)
    if (reason := password_problem(password)) is not None:
        raise CommandError(f"password {reason}")
    conn = await connect(await _database(settings))
    try:
        org = await OrgRepository(conn).get_by_slug(org_slug)
        if org is None:
            raise CommandError(f"no organisation with slug {org_slug!r}")
        user = await UserRepository(conn).add(org.id, email, name, role, hash_password(password))
    finally:
        await conn.close()
    print(f"user {user.email} ({user.role}) created in {org.slug}")
    if generated:
        print(f"generated password (shown once): {password}")


async def _import_registry(settings: Settings, text: str, org_slug: str | None) -> None:
    from cases.registry import parse_licence_csv
    from storage.accounts import OrgRepository
    from storage.db import connect
    from storage.registry import RegistryRepository

    conn = await connect(await _database(settings))
    try:
        org_id = None
        if org_slug is not None:
            org = await OrgRepository(conn).get_by_slug(org_slug)
            if org is None:
                raise CommandError(f"no organisation with slug {org_slug!r}")
            org_id = org.id
        async with conn.transaction():
            summary = await RegistryRepository(conn).import_licences(
                org_id, parse_licence_csv(text)
            )
    finally:
        await conn.close()
    print(
        f"created {summary.created}, updated {summary.updated}, unchanged {summary.unchanged}, "
        f"problems {len(summary.problems)}"
    )
    for problem in summary.problems[:50]:
        print(f"  line {problem.line}: {problem.message}")


async def _check(settings: Settings) -> bool:
    from server.runtime import open_blob_store
    from storage.db import connect

    ok = True
    try:
        conn = await connect(await _database(settings))
        await conn.fetchval("SELECT 1")
        await conn.close()
        print("database: ok")
    except Exception as exc:
        print(f"database: unreachable ({exc})")
        ok = False
    try:
        store = await open_blob_store(settings)
        await store.check()
        print(f"blob store: ok ({'s3' if settings.s3 else 'local'})")
    except Exception as exc:
        print(f"blob store: unreachable ({exc})")
        ok = False
    return ok


async def _prepare(settings: Settings, migrate: bool) -> None:
    from server.runtime import bootstrap_demo, migrate_database

    dsn = await _database(settings)
    if migrate:
        await migrate_database(dsn)
    if settings.create_demo:
        demo = await bootstrap_demo(dsn, settings.data_dir)
        if demo is not None:
            print(
                "\nA demo organisation was created. Log in with\n"
                f"  e-mail:   {demo.email}\n  password: {demo.password}\n"
                f"(also saved, readable only by you, in {demo.credentials_file})\n",
                flush=True,
            )


async def _run_headless(settings: Settings, role: str) -> None:
    """The worker or scheduler role without an HTTP listener."""
    from server.runtime import open_resources
    from server.scheduler import run_scheduler
    from server.worker import WorkerContext, run_worker

    resources = await open_resources(settings)
    pool, dsn = resources.pool, resources.dsn
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if role == "worker":
            await run_worker(
                pool, stop, settings.worker_poll_seconds, WorkerContext(resources=resources)
            )
        else:
            await run_scheduler(dsn, pool, stop)
    finally:
        await pool.close()


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _serve(settings: Settings, role: str, migrate: bool) -> None:
    import uvicorn

    from server.app import create_app

    asyncio.run(_prepare(settings, migrate))
    if role in ("worker", "scheduler"):
        asyncio.run(_run_headless(settings, role))
        return
    background = frozenset({"worker", "scheduler"}) if role == "all" else frozenset()
    app = create_app(settings, background=background)
    print(f"Fairwatch on http://{settings.host}:{settings.port} (API docs at /docs)", flush=True)
    # What is loaded by now lives as long as the process: freeze it out of the collector's full
    # passes, and run the young generation less often. A push batch keeps tens of thousands of
    # objects alive for a moment; with the default thresholds the collector made full passes over
    # them several times a second (about a quarter of the app's CPU in bench/sync_bench.py).
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)
    # uvicorn shuts down gracefully on SIGTERM and then raises the signal again under the
    # handler it found. With the default one the process would die there, skipping the exit
    # handlers, and the embedded PostgreSQL would outlive it with a stale handle that keeps it
    # running for good; exiting the interpreter normally runs them (same code as the default).
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        proxy_headers=True,
        server_header=False,
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["simulate"]:
        # The simulator is a device-side program with its own options; it only needs a URL.
        from sync.client.fleet import main as simulate

        return simulate(argv[1:])
    if argv[:1] == ["scan-files"]:
        # A check of the scan core on SaTScan-format files: no database, no settings.
        from server.cli_scan import main as scan_files

        return scan_files(argv[1:])
    args = _parser().parse_args(argv)
    env = dict(os.environ)
    if args.command == "serve":
        if args.host is not None:
            env["FAIRWATCH_HOST"] = args.host
        if args.port is not None:
            env["FAIRWATCH_PORT"] = str(args.port)
    try:
        settings = load_settings(env)
    except SettingsError as exc:
        print(f"fairwatch: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_json)
    from server.cli_protection import handle as handle_protection

    try:
        handled = handle_protection(args, settings)
        if handled is not None:
            return handled
        if args.command == "serve":
            _serve(settings, args.role, not args.no_migrate)
        elif args.command == "migrate":
            asyncio.run(_migrate(settings))
        elif args.command == "create-org":
            asyncio.run(_create_org(settings, args.slug, args.name))
        elif args.command == "create-user":
            password = sys.stdin.readline().rstrip("\n") if args.password_stdin else None
            if password is None and sys.stdin.isatty():
                password = getpass.getpass("password (empty: generate one): ") or None
            asyncio.run(
                _create_user(settings, args.org, args.email, args.name, Role(args.role), password)
            )
        elif args.command == "registry":
            try:
                text = args.csv_file.read_text(encoding="utf-8-sig")
            except (OSError, UnicodeDecodeError) as exc:
                raise CommandError(f"cannot read {args.csv_file}: {exc}") from None
            asyncio.run(_import_registry(settings, text, args.org))
        elif args.command == "check":
            return 0 if asyncio.run(_check(settings)) else 1
    except KeyboardInterrupt:
        return 130
    except CommandError as exc:
        print(f"fairwatch: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        from storage.errors import StorageError

        if isinstance(exc, StorageError):
            print(f"fairwatch: {exc}", file=sys.stderr)
            return 1
        raise
    return 0
