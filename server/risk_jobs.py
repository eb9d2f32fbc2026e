"""Scheduled and on-demand risk scans, and alert delivery (webhooks)."""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["HANDLERS"]

if TYPE_CHECKING:
    from server.worker import JobHandler

HANDLERS: dict[str, JobHandler] = {}
