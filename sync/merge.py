"""Field-level three-way merge of a report amendment against edits made since its base version.

A field changed by one side takes that change; the same change on both sides is fine; different
changes to the same field become a ``FieldConflict`` and the field keeps the server value until a
case manager resolves it. Never last-writer-wins. Set-like lists (categories, attachments) merge
additions and removals element by element; small nested records (worker, employer, recruiter,
consent) merge sub-field by sub-field. A location stays atomic: its coordinates belong together.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any, Final

import msgspec

from cases.reports import Report
from sync.messages import ReportChanges

__all__ = [
    "REPORT_NESTED_FIELDS",
    "REPORT_SET_FIELDS",
    "FieldConflict",
    "MergeResult",
    "amendment_fields",
    "merge_fields",
    "merge_report",
    "report_fields",
    "set_field_path",
]

ElementKey = Callable[[Any], Any]


def _code(element: Any) -> Any:
    return element


def _sha256(element: Any) -> Any:
    return element["sha256"] if isinstance(element, dict) else element


REPORT_SET_FIELDS: Final[Mapping[str, ElementKey]] = {
    "categories": _code,
    "attachments": _sha256,
}
REPORT_NESTED_FIELDS: Final = frozenset({"worker", "employer", "recruiter", "consent"})


class _Absent(enum.Enum):
    ABSENT = "absent"


_ABSENT: Final = _Absent.ABSENT


class FieldConflict(msgspec.Struct, frozen=True, kw_only=True):
    """Both sides changed ``path`` differently. ``None`` stands for "not present" in set fields."""

    path: str
    base: Any
    server: Any
    incoming: Any


class MergeResult(msgspec.Struct, frozen=True, kw_only=True):
    """The merged fields, the top-level fields that differ from the server's, and the conflicts."""

    fields: dict[str, Any]
    changed: tuple[str, ...]
    conflicts: tuple[FieldConflict, ...]


def _plain(value: Any) -> Any:
    """Builtins with every field present (``to_builtins`` would drop defaults of our Structs)."""
    if isinstance(value, msgspec.Struct):
        return {f: _plain(getattr(value, f)) for f in value.__struct_fields__}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return msgspec.to_builtins(value)


def report_fields(report: Report) -> dict[str, Any]:
    """A report as the plain field mapping the merge works on (and versions are stored as)."""
    fields: dict[str, Any] = _plain(report)
    return fields


def amendment_fields(changes: ReportChanges) -> dict[str, Any]:
    """Only the fields an amendment sets, as plain values."""
    return {
        f: _plain(getattr(changes, f))
        for f in changes.__struct_fields__
        if getattr(changes, f) is not msgspec.UNSET
    }


class _Merger:
    def __init__(self, set_fields: Mapping[str, ElementKey], nested: frozenset[str]) -> None:
        self.set_fields = set_fields
        self.nested = nested
        self.conflicts: list[FieldConflict] = []

    def conflict(self, path: str, base: Any, server: Any, incoming: Any) -> Any:
        self.conflicts.append(
            FieldConflict(
                path=path,
                base=None if base is _ABSENT else base,
                server=None if server is _ABSENT else server,
                incoming=None if incoming is _ABSENT else incoming,
            )
        )
        return server

    def scalar(self, path: str, base: Any, server: Any, incoming: Any) -> Any:
        if incoming in (base, server):
            return server
        if server == base:
            return incoming
        return self.conflict(path, base, server, incoming)

    def field(self, name: str, base: Any, server: Any, incoming: Any) -> Any:
        if incoming in (base, server):
            return server
        if server == base:
            return incoming
        if name in self.set_fields and all(isinstance(v, list) for v in (base, server, incoming)):
            return self.keyed(name, base, server, incoming, self.set_fields[name])
        if name in self.nested and all(isinstance(v, dict) for v in (base, server, incoming)):
            keys = list(dict.fromkeys([*server, *incoming]))
            return {
                k: self.scalar(
                    f"{name}.{k}",
                    base.get(k, _ABSENT),
                    server.get(k, _ABSENT),
                    incoming.get(k, _ABSENT),
                )
                for k in keys
            }
        return self.conflict(name, base, server, incoming)

    def keyed(
        self, name: str, base: list[Any], server: list[Any], incoming: list[Any], key: ElementKey
    ) -> list[Any]:
        b = {key(e): e for e in base}
        s = {key(e): e for e in server}
        i = {key(e): e for e in incoming}
        merged: list[Any] = []
        # Server order first, then the device's additions in its order: stable, predictable.
        for k in dict.fromkeys([*s, *i]):
            value = self.scalar(
                f"{name}[{k}]", b.get(k, _ABSENT), s.get(k, _ABSENT), i.get(k, _ABSENT)
            )
            if value is not _ABSENT:
                merged.append(value)
        return merged


def merge_fields(
    base: Mapping[str, Any],
    current: Mapping[str, Any],
    incoming: Mapping[str, Any],
    *,
    set_fields: Mapping[str, ElementKey] = REPORT_SET_FIELDS,
    nested: frozenset[str] = REPORT_NESTED_FIELDS,
) -> MergeResult:
    """Merge ``incoming`` (the fields an edit based on ``base`` sets) into ``current``.

    ``base`` and ``current`` are complete field mappings; fields absent from ``incoming`` were not
    touched by the edit. Merging the same edit again into the result changes nothing.
    """
    merger = _Merger(set_fields, nested)
    fields = dict(current)
    for name, value in incoming.items():
        merged = merger.field(name, base.get(name, _ABSENT), current.get(name, _ABSENT), value)
        if merged is _ABSENT:
            fields.pop(name, None)
        else:
            fields[name] = merged
    changed = tuple(name for name in fields if name not in current or fields[name] != current[name])
    return MergeResult(fields=fields, changed=changed, conflicts=tuple(merger.conflicts))


def merge_report(
    base: Report, current: Report, changes: ReportChanges
) -> tuple[Report, MergeResult]:
    """Merge an amendment into the current report and validate the result as a Report.

    Raises ``msgspec.ValidationError`` when the merged report breaks a limit (e.g. two sides'
    added categories together exceed 20): the amendment is then rejected as ``invalid``.
    """
    result = merge_fields(report_fields(base), report_fields(current), amendment_fields(changes))
    merged = msgspec.convert(result.fields, Report)
    return merged, result


def set_field_path(
    fields: Mapping[str, Any],
    path: str,
    value: Any,
    *,
    set_fields: Mapping[str, ElementKey] = REPORT_SET_FIELDS,
) -> dict[str, Any]:
    """A copy of ``fields`` with the conflict ``path`` set to ``value`` (``None``: removed).

    Paths are those of ``FieldConflict``: ``name``, ``name.sub`` or ``name[key]`` for an element
    of a set field. This is how a case manager's resolution of a conflict is applied.
    """
    out = dict(fields)
    if "[" in path and path.endswith("]"):
        name, _, key = path[:-1].partition("[")
        element_key = set_fields[name]
        kept = [e for e in out.get(name) or [] if str(element_key(e)) != key]
        if value is not None:
            position = next(
                (i for i, e in enumerate(out.get(name) or []) if str(element_key(e)) == key),
                len(kept),
            )
            kept.insert(position, value)
        out[name] = kept
        return out
    if "." in path:
        name, _, sub = path.partition(".")
        inner = dict(out.get(name) or {})
        if value is None:
            inner.pop(sub, None)
        else:
            inner[sub] = value
        out[name] = inner
        return out
    if value is None:
        out.pop(path, None)
    else:
        out[path] = value
    return out
