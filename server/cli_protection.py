"""CLI commands for keys, the audit chain and retention.

``fairwatch keys rotate`` re-wraps every data key under the configured current master key, in
short batches, while the service runs (data keys do not change, so no ciphertext is rewritten);
``fairwatch keys rotate-data-key --org SLUG`` starts a new data key for new writes;
``fairwatch keys status`` counts data keys per master key. ``fairwatch audit verify`` recomputes
the hash chains (exit 1 on any problem), ``fairwatch audit heads`` prints each chain's head to be
copied somewhere the database's owner cannot reach, ``fairwatch retention run`` applies retention
now. Key and retention actions are recorded in the audit chain as the ``cli`` system actor.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid

from server.settings import Settings
from storage.audit import ActorKind, AuditEntry
from storage.db import Conn

__all__ = ["handle", "register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this area's commands to the ``fairwatch`` parser."""
    keys = sub.add_parser("keys", help="encryption key management")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    keys_sub.add_parser(
        "rotate",
        help="re-wrap every data key under the current master key (FAIRWATCH_MASTER_KEY); keep "
        "the old one in FAIRWATCH_PREVIOUS_MASTER_KEYS until this has finished",
    )
    data_key = keys_sub.add_parser(
        "rotate-data-key", help="start a new data key for an organisation's new writes"
    )
    data_key.add_argument("--org", required=True, help="organisation slug")
    keys_sub.add_parser("status", help="how many data keys each master key wraps")

    audit = sub.add_parser("audit", help="audit chain checks")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser("verify", help="recompute the hash chains; exit 1 on a problem")
    verify.add_argument("--org", help="organisation slug (default: every organisation)")
    audit_sub.add_parser("heads", help="print each organisation's chain head (seq and hash)")

    retention = sub.add_parser("retention", help="data minimisation")
    retention_sub = retention.add_subparsers(dest="retention_command", required=True)
    retention_sub.add_parser("run", help="redact what is due now (the daily job does the same)")


def handle(args: argparse.Namespace, settings: Settings) -> int | None:
    """Run the command if it is one of this area's; None otherwise."""
    if args.command == "keys":
        return asyncio.run(_keys(settings, args.keys_command, getattr(args, "org", None)))
    if args.command == "audit":
        return asyncio.run(_audit(settings, args.audit_command, getattr(args, "org", None)))
    if args.command == "retention":
        return asyncio.run(_retention(settings))
    return None


async def _connect(settings: Settings) -> Conn:
    from server.runtime import resolve_database_url
    from storage.db import connect

    return await connect(await resolve_database_url(settings))


async def _org_slugs(conn: Conn) -> dict[uuid.UUID, str]:
    from storage.queries import Q

    return {r["id"]: r["slug"] for r in await conn.fetch(Q.list_org_slugs)}


async def _org_id(conn: Conn, slug: str) -> uuid.UUID | None:
    from storage.accounts import OrgRepository

    org = await OrgRepository(conn).get_by_slug(slug)
    return None if org is None else org.id


async def _keys(settings: Settings, command: str, slug: str | None) -> int:
    from server.runtime import load_keyring
    from storage.audit import record
    from storage.keyring import data_keys_by_master, rotate_master_key
    from storage.queries import Q

    keyring = await load_keyring(settings)
    conn = await _connect(settings)
    try:
        current = keyring.masters.current
        if command == "status":
            for key_id, n in sorted((await data_keys_by_master(conn)).items()):
                mark = " (current)" if key_id == current.key_id else ""
                print(f"master key {key_id}{mark}: {n} data keys")
            return 0
        if command == "rotate-data-key":
            assert slug is not None
            org_id = await _org_id(conn, slug)
            if org_id is None:
                print(f"fairwatch: no organisation with slug {slug!r}")
                return 1
            async with conn.transaction():
                version = await keyring.rotate_data_key(conn, org_id)
                await record(conn, _system(org_id, "keys.rotate_data_key", version=version))
            print(f"{slug}: new data key version {version} (older versions keep decrypting)")
            return 0
        pending = {
            r["org_id"]: r["n"]
            for r in await conn.fetch(Q.data_keys_to_rewrap_by_org, current.key_id)
        }
        total = await rotate_master_key(conn, keyring, current)
        for org_id, n in pending.items():
            await record(
                conn,
                _system(
                    org_id, "keys.rotate_master_key", master_key_id=current.key_id, rewrapped=n
                ),
            )
        counts = await data_keys_by_master(conn)
        print(f"re-wrapped {total} data keys under master key {current.key_id}")
        others = {k: n for k, n in counts.items() if k != current.key_id}
        if others:
            print(f"still under other master keys: {others} (run again)")
            return 1
        print("no data key needs an older master key now: it can be removed from the config")
        return 0
    finally:
        await conn.close()


def _system(org_id: uuid.UUID, action: str, **detail: object) -> AuditEntry:
    return AuditEntry(
        org_id=org_id,
        actor_kind=ActorKind.SYSTEM,
        actor_id="cli",
        action=action,
        object_kind="org",
        object_id=str(org_id),
        detail=dict(detail),
    )


async def _audit(settings: Settings, command: str, slug: str | None) -> int:
    from storage.audit import chain_heads, verify_chain

    conn = await _connect(settings)
    try:
        slugs = await _org_slugs(conn)
        if command == "heads":
            heads = await chain_heads(conn)
            for head in sorted(heads, key=lambda h: slugs.get(h.org_id, str(h.org_id))):
                print(
                    f"{slugs.get(head.org_id, head.org_id)} seq={head.seq} hash={head.hash.hex()}"
                )
            return 0
        org_id = None
        if slug is not None:
            org_id = await _org_id(conn, slug)
            if org_id is None:
                print(f"fairwatch: no organisation with slug {slug!r}")
                return 1
        report = await verify_chain(conn, org_id)
        for org in sorted(report.orgs, key=lambda o: slugs.get(o.org_id, str(o.org_id))):
            name = slugs.get(org.org_id, str(org.org_id))
            if org.ok:
                print(f"{name}: ok ({org.entries_checked} entries)")
            else:
                print(
                    f"{name}: FAILED {org.problem} at entry {org.first_bad_seq}: "
                    f"{org.explanation} ({org.entries_checked} good entries before it)"
                )
        return 0 if report.ok else 1
    finally:
        await conn.close()


async def _retention(settings: Settings) -> int:
    from server.retention import erase_attachments, run_retention
    from server.runtime import open_blob_store

    conn = await _connect(settings)
    try:
        slugs = await _org_slugs(conn)
        done: dict[str, int] = {}
        while True:  # batch after batch, each its own short transaction, until nothing is due
            async with conn.transaction():
                batch = await run_retention(conn)
            if not batch:
                break
            for org_id, n in batch.items():
                done[org_id] = done.get(org_id, 0) + n
        for org_id, n in sorted(done.items()):
            print(f"{slugs.get(uuid.UUID(org_id), org_id)}: redacted {n} reports")
        if not done:
            print("nothing to redact")
        # After the commits: the blobs of erased attachments (also those a crashed run left).
        erased = await erase_attachments(conn, await open_blob_store(settings))
        if erased:
            print(f"attachments of redacted reports: {erased} erasures carried out")
        return 0
    finally:
        await conn.close()
