"""One simulated phone of the fleet: a real ``Device`` with its own seeded randomness, clock skew,
wire format, compression and (optionally) a chaos transport, plus what it created, for checking.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from sync.client.chaos import ChaosStats, ChaosTransport, chaos_planner
from sync.client.content import City
from sync.client.device import Device, seq_order
from sync.client.retry import RetryPolicy
from sync.client.transport import Compression, SyncTransport
from sync.codec import WireFormat

__all__ = ["Monitor", "SimDevice", "open_sim_device"]

_FLUSH_ROUNDS = 12
# Short delays: the simulator wants many retries quickly, not a polite phone on 2G.
_RETRY = RetryPolicy(attempts=16, base_delay=0.01, max_delay=0.25)
_SKEW_MIN = -3 * 24 * 3600.0
_SKEW_MAX = 2 * 3600.0


@dataclass(frozen=True, slots=True)
class Monitor:
    index: int
    id: uuid.UUID
    city: City


async def _no_pause(_: float) -> None:
    # Let the other devices run between retries without slowing the simulation down.
    await asyncio.sleep(0)


@dataclass(slots=True)
class SimDevice:
    index: int
    monitor: Monitor
    directory: Path
    base_url: str
    chaos: bool
    rng: random.Random
    skew: dt.timedelta
    fmt: WireFormat
    compression: Compression
    stats: ChaosStats = field(default_factory=ChaosStats)
    created: list[uuid.UUID] = field(default_factory=list)
    declared: set[str] = field(default_factory=set)
    amended: int = 0
    interrupted_uploads: int = 0
    pull_resets: int = 0
    restarts: int = 0
    max_attachment_bytes: int = 1536 * 1024
    device: Device = field(init=False)
    http: httpx.AsyncClient = field(init=False)
    chaos_transport: ChaosTransport | None = field(init=False)

    def __post_init__(self) -> None:
        self._connect()

    def _connect(self) -> None:
        inner = httpx.AsyncHTTPTransport(retries=0)
        seed = self.rng.random()
        self.chaos_transport = (
            ChaosTransport(inner, random.Random(seed), self.stats) if self.chaos else None  # noqa: S311
        )
        self.http = httpx.AsyncClient(transport=self.chaos_transport or inner, timeout=60.0)
        transport = SyncTransport(
            self.base_url, fmt=self.fmt, compression=self.compression, http=self.http
        )
        self.device = Device.open(
            self.directory,
            transport,
            clock=self.clock,
            rng=random.Random(seed + 1),  # noqa: S311
            retry=_RETRY,
            sleep=_no_pause,
            plan_batch=chaos_planner(random.Random(seed + 2)) if self.chaos else seq_order,  # noqa: S311
        )

    def clock(self) -> dt.datetime:
        """The phone's clock: wrong by a fixed skew, as phones without network time are."""
        return dt.datetime.now(dt.UTC) + self.skew

    async def pull(self) -> None:
        self.pull_resets += (await self.device.pull()).resets

    async def sync(self, *, interrupt_uploads: bool) -> None:
        """What the app does when it sees a network: push, upload media, pull."""
        await self.device.push()
        if interrupt_uploads and self.device.outbox.pending_uploads():
            summary = await self.device.upload_attachments(max_parts=self.rng.randint(0, 1))
            self.interrupted_uploads += int(summary.interrupted)
        else:
            await self.device.upload_attachments()
        await self.pull()

    async def flush(self) -> None:
        """Sync until the outbox and uploads are empty, then stop the chaos for the final check."""
        for _ in range(_FLUSH_ROUNDS):
            await self.sync(interrupt_uploads=False)
            if not self.device.outbox.depth() and not self.device.outbox.pending_uploads():
                break
        if self.chaos_transport is not None:
            self.chaos_transport.enabled = False
        await self.pull()

    async def restart(self) -> None:
        """Kill the app and start it again: everything must come back from its files."""
        await self.close()
        self._connect()
        self.restarts += 1

    async def close(self) -> None:
        self.device.outbox.close()
        await self.http.aclose()


def open_sim_device(
    index: int, monitor: Monitor, base_url: str, workdir: Path, *, chaos: bool, seed: int
) -> SimDevice:
    """Device ``index`` of a run; its randomness depends only on ``seed`` and ``index``."""
    rng = random.Random(f"fleet:{seed}:{index}")  # noqa: S311 - simulation, not secrets
    skew = rng.uniform(_SKEW_MIN, _SKEW_MAX) if chaos else rng.uniform(-5.0, 5.0)
    return SimDevice(
        index=index,
        monitor=monitor,
        directory=workdir / f"device-{index:04d}",
        base_url=base_url,
        chaos=chaos,
        rng=rng,
        skew=dt.timedelta(seconds=skew),
        # Mix the encodings a real fleet would use, so the server sees all of them.
        fmt=(WireFormat.JSON, WireFormat.MSGPACK)[index % 2],
        compression=(Compression.ZSTD, Compression.GZIP, Compression.IDENTITY)[index % 3],
    )
