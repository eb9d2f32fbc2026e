"""Background work of case management (cases opened from incidents, SLA reminders)."""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["HANDLERS"]

if TYPE_CHECKING:
    from server.worker import JobHandler

HANDLERS: dict[str, JobHandler] = {}
