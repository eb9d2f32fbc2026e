"""Background matching of new reports: incident dedup, entity resolution, person dedup."""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["HANDLERS"]

if TYPE_CHECKING:
    from server.worker import JobHandler

HANDLERS: dict[str, JobHandler] = {}
