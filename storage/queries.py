"""Named SQL queries: every statement lives in a ``storage/sql/*.sql`` file under a name.

A file holds blocks that start with ``-- name: some_name``; ``queries()`` parses all files once and
returns ``{name: sql}``. Repositories refer to statements by name, so SQL stays reviewable as SQL.
"""

from __future__ import annotations

import functools
import re
from importlib import resources

__all__ = ["Q", "parse_queries", "queries"]

_HEADER = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def parse_queries(text: str, source: str = "<text>") -> dict[str, str]:
    found: dict[str, str] = {}
    headers = list(_HEADER.finditer(text))
    for i, header in enumerate(headers):
        end = headers[i + 1].start() if i + 1 < len(headers) else len(text)
        body = text[header.end() : end].strip()
        name = header[1]
        if not body:
            raise ValueError(f"{source}: query {name} is empty")
        if name in found:
            raise ValueError(f"{source}: query {name} is defined twice")
        found[name] = body
    return found


@functools.cache
def queries(package: str = "storage.sql") -> dict[str, str]:
    merged: dict[str, str] = {}
    for entry in sorted(resources.files(package).iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        for name, sql in parse_queries(entry.read_text(encoding="utf-8"), entry.name).items():
            if name in merged:
                raise ValueError(f"{entry.name}: query {name} is already defined in another file")
            merged[name] = sql
    return merged


class _Queries:
    """Attribute access (``Q.get_user``) with a clear error for a misspelt name."""

    def __getattr__(self, name: str) -> str:
        try:
            return queries()[name]
        except KeyError:
            raise AttributeError(f"no SQL query named {name!r} in storage/sql") from None


Q = _Queries()
