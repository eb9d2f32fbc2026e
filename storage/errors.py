"""Domain errors raised at the storage boundary; ``server/problems.py`` maps them to HTTP once."""

from __future__ import annotations

__all__ = [
    "AlreadyExists",
    "MigrationError",
    "NotFound",
    "StaleVersion",
    "StorageError",
    "StorageUnavailable",
]


class StorageError(Exception):
    """Base class of every error the storage layer raises on purpose."""


class NotFound(StorageError):
    """The object does not exist, or belongs to another organisation (indistinguishable)."""

    def __init__(self, kind: str, key: object) -> None:
        super().__init__(f"{kind} {key} not found")
        self.kind = kind
        self.key = key


class AlreadyExists(StorageError):
    """A unique constraint refused the write; ``field`` says which natural key collided."""

    def __init__(self, kind: str, field: str) -> None:
        super().__init__(f"{kind} with this {field} already exists")
        self.kind = kind
        self.field = field


class StaleVersion(StorageError):
    """An optimistic-concurrency write was based on an old version."""

    def __init__(self, kind: str, key: object, current_version: int) -> None:
        super().__init__(f"{kind} {key} has changed (current version {current_version})")
        self.kind = kind
        self.key = key
        self.current_version = current_version


class StorageUnavailable(StorageError):
    """The database cannot be reached."""


class MigrationError(StorageError):
    """A migration cannot be applied safely (changed after it was applied, or a gap)."""
