"""Job handlers of risk detection: ``risk.scan`` runs a queued scan run (scheduled or on
demand), ``risk.webhook`` makes one attempt of one webhook delivery."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from server.webhooks import deliver_webhook
from server.worker import Handler, PoolHandler
from storage.db import Conn
from storage.jobs import ClaimedJob
from storage.risk_delivery import DELIVERY_JOB
from storage.risk_runs import execute_run

__all__ = ["HANDLERS", "SCAN_JOB"]

if TYPE_CHECKING:
    from server.worker import WorkerContext

SCAN_JOB = "risk.scan"


async def run_scan(conn: Conn, job: ClaimedJob, context: WorkerContext) -> None:
    """Execute the run named in the payload; its outcome (and any error) lands on the run."""
    if job.org_id is None:
        raise ValueError("a risk.scan job must belong to an organisation")
    await execute_run(
        conn, job.org_id, uuid.UUID(job.payload["run_id"]), context.resources.taxonomy
    )


HANDLERS: dict[str, Handler] = {
    SCAN_JOB: run_scan,
    DELIVERY_JOB: PoolHandler(deliver_webhook),
}
