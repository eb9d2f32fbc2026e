"""Exactly-once push: which mutations of a batch to apply, in what order, and what to answer.

``plan_push`` is pure. The storage layer loads the device's ledger, the stored results of the
batch's mutation ids and the device's held mutations (with the device row locked, so two pushes
from one device never interleave), executes ``PushPlan.steps`` in order inside one transaction,
and builds the response with ``push_response``. Every step consumes its seq whatever its outcome,
so one bad mutation never blocks the ones after it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final
from uuid import UUID

import msgspec

from sync.codec import InvalidMutation
from sync.messages import (
    MAX_BATCH,
    TRANSPORT_FIELDS,
    Mutation,
    MutationResult,
    MutationStatus,
    PushResponse,
    ReasonCode,
)

__all__ = [
    "MAX_HOLD_WINDOW",
    "ApplyStep",
    "DeviceLedger",
    "HeldMutation",
    "PushPlan",
    "StoredMutation",
    "envelope_of",
    "mutation_body_hash",
    "plan_push",
    "push_response",
]

# How far ahead of the next expected seq a mutation may be held. Beyond it the device is told to
# resend later (``seq_gap``), which bounds the held rows a device can make the server keep.
MAX_HOLD_WINDOW: Final = 2 * MAX_BATCH

_CANONICAL: Final = msgspec.json.Encoder(order="sorted")


class DeviceLedger(msgspec.Struct, frozen=True, kw_only=True):
    """Per-device push state: every seq below ``next_seq`` has a stored, final result."""

    device_id: UUID
    next_seq: int = 1


class StoredMutation(msgspec.Struct, frozen=True, kw_only=True):
    """A mutation with a final result. Written once, never updated; resends replay ``result``."""

    mutation_id: UUID
    device_id: UUID
    seq: int
    body_hash: str
    result: MutationResult


class HeldMutation(msgspec.Struct, frozen=True, kw_only=True):
    """A mutation that arrived before its predecessor, kept server-side until the gap closes."""

    mutation_id: UUID
    seq: int
    body_hash: str
    mutation: Mutation | InvalidMutation
    received_at: dt.datetime


class ApplyStep(msgspec.Struct, frozen=True, kw_only=True):
    """Apply one mutation, in seq order. If ``preset_result`` is set, store it instead of applying
    (the mutation could not be decoded); otherwise apply the content and store its result.
    ``from_hold`` steps must also be deleted from the held mutations."""

    mutation_id: UUID
    seq: int
    body_hash: str
    mutation: Mutation | InvalidMutation
    received_at: dt.datetime
    from_hold: bool
    preset_result: MutationResult | None = None


class _Ready(msgspec.Struct, frozen=True):
    result: MutationResult


class _FromStep(msgspec.Struct, frozen=True):
    mutation_id: UUID


class _Held(msgspec.Struct, frozen=True):
    mutation_id: UUID


class _ReusedAgainst(msgspec.Struct, frozen=True):
    """Lost an id clash with a body first seen in this batch or held; its version comes later."""

    winner: UUID
    seq: int


_Outcome = _Ready | _FromStep | _Held | _ReusedAgainst


class PushPlan(msgspec.Struct, frozen=True, kw_only=True):
    """What to do with a batch. Execute ``steps`` in order, insert ``new_holds``, set the device's
    ``next_seq``; then ``push_response`` turns the stored results into the answer."""

    device_id: UUID
    steps: tuple[ApplyStep, ...]
    new_holds: tuple[HeldMutation, ...]
    next_seq: int
    received_at: dt.datetime
    outcomes: tuple[_Outcome, ...]
    held: Mapping[UUID, HeldMutation]


def envelope_of(mutation: Mutation | InvalidMutation) -> tuple[UUID, int]:
    """``(mutation_id, seq)`` of a decoded or undecodable mutation."""
    if isinstance(mutation, InvalidMutation):
        return mutation.envelope.mutation_id, mutation.envelope.seq
    return mutation.mutation_id, mutation.seq


def mutation_body_hash(device_id: UUID, mutation: Mutation | InvalidMutation) -> str:
    """sha256 hex over a canonical (sorted-key JSON) encoding of the device id and the mutation
    without transport-only fields. Defaults are omitted, so a field the server adds later (always
    with a default) does not change the hash of a mutation stored before it existed."""
    body: Any
    if isinstance(mutation, InvalidMutation):
        body = mutation.body
        if isinstance(body, dict):
            body = {k: v for k, v in body.items() if k not in TRANSPORT_FIELDS}
    else:
        body = msgspec.to_builtins(mutation)
        for name in TRANSPORT_FIELDS:
            body.pop(name, None)
    try:
        canonical = _CANONICAL.encode({"device_id": str(device_id), "body": body})
    except (TypeError, msgspec.EncodeError):
        # A msgpack body with extension types has no JSON form; its exact bytes identify it.
        assert isinstance(mutation, InvalidMutation)
        canonical = str(device_id).encode() + b"\0" + bytes(mutation.raw)
    return hashlib.sha256(canonical).hexdigest()


def _result(
    mutation_id: UUID,
    seq: int,
    status: MutationStatus,
    received_at: dt.datetime,
    reason: ReasonCode | None = None,
    *,
    detail: str | None = None,
    version: int | None = None,
    record_id: UUID | None = None,
) -> MutationResult:
    return MutationResult(
        mutation_id=mutation_id,
        seq=seq,
        status=status,
        reason=reason,
        detail=detail,
        version=version,
        record_id=record_id,
        received_at=received_at,
    )


def _invalid_result(mutation: InvalidMutation, received_at: dt.datetime) -> MutationResult:
    reason = ReasonCode.UNKNOWN_KIND if mutation.unknown_kind else ReasonCode.INVALID
    env = mutation.envelope
    return _result(
        env.mutation_id,
        env.seq,
        MutationStatus.REJECTED,
        received_at,
        reason,
        detail=mutation.error[:2000],
    )


def plan_push(
    ledger: DeviceLedger,
    batch: Sequence[Mutation | InvalidMutation],
    *,
    stored: Mapping[UUID, StoredMutation],
    held: Iterable[HeldMutation],
    received_at: dt.datetime,
    hold_window: int = MAX_HOLD_WINDOW,
) -> PushPlan:
    """Decide, for every mutation of ``batch`` (any order, duplicates allowed), what happens.

    ``stored`` must hold the stored result of every mutation id in the batch that has one (other
    ids may be present); ``held`` must be all of the device's held mutations.
    """
    device_id = ledger.device_id
    held_by_id = {h.mutation_id: h for h in held}
    # seq -> step candidate; held mutations come first so they keep the seq they claimed.
    pending: dict[int, ApplyStep] = {
        h.seq: ApplyStep(
            mutation_id=h.mutation_id,
            seq=h.seq,
            body_hash=h.body_hash,
            mutation=h.mutation,
            received_at=h.received_at,
            from_hold=True,
        )
        for h in held_by_id.values()
    }
    first_seen: dict[UUID, tuple[str, int]] = {}
    outcomes: list[_Outcome] = []

    for index, mutation in enumerate(batch):
        mutation_id, seq = envelope_of(mutation)
        body_hash = mutation_body_hash(device_id, mutation)
        known = stored.get(mutation_id)
        if known is not None:
            if known.body_hash == body_hash and known.device_id == device_id:
                outcomes.append(_Ready(known.result))
            else:
                same_device = known.device_id == device_id
                outcomes.append(
                    _Ready(
                        _result(
                            mutation_id,
                            seq,
                            MutationStatus.REJECTED,
                            known.result.received_at,
                            ReasonCode.ID_REUSED_WITH_DIFFERENT_BODY,
                            # Never reveal another device's records.
                            version=known.result.version if same_device else None,
                            record_id=known.result.record_id if same_device else None,
                        )
                    )
                )
            continue
        waiting = held_by_id.get(mutation_id)
        if waiting is not None:
            if waiting.body_hash == body_hash:
                outcomes.append(_Held(mutation_id))
            else:
                outcomes.append(_ReusedAgainst(mutation_id, seq))
            continue
        # New to the server, but possibly repeated in this batch: the first occurrence wins.
        if mutation_id in first_seen:
            first_hash, first_index = first_seen[mutation_id]
            if first_hash == body_hash:
                outcomes.append(outcomes[first_index])
            else:
                outcomes.append(_ReusedAgainst(mutation_id, seq))
            continue
        first_seen[mutation_id] = (body_hash, index)

        if seq < ledger.next_seq or seq in pending:
            outcomes.append(
                _Ready(
                    _result(
                        mutation_id,
                        seq,
                        MutationStatus.REJECTED,
                        received_at,
                        ReasonCode.SEQ_ALREADY_USED,
                    )
                )
            )
        elif seq >= ledger.next_seq + hold_window:
            outcomes.append(
                _Ready(
                    _result(
                        mutation_id,
                        seq,
                        MutationStatus.REJECTED,
                        received_at,
                        ReasonCode.SEQ_GAP,
                        detail=f"seq {seq} is too far ahead of {ledger.next_seq}; resend later",
                    )
                )
            )
        else:
            pending[seq] = ApplyStep(
                mutation_id=mutation_id,
                seq=seq,
                body_hash=body_hash,
                mutation=mutation,
                received_at=received_at,
                from_hold=False,
            )
            outcomes.append(_Held(mutation_id))

    steps: list[ApplyStep] = []
    next_seq = ledger.next_seq
    while next_seq in pending:
        step = pending.pop(next_seq)
        if isinstance(step.mutation, InvalidMutation):
            step = msgspec.structs.replace(
                step, preset_result=_invalid_result(step.mutation, step.received_at)
            )
        steps.append(step)
        next_seq += 1

    stepped = {s.mutation_id for s in steps}
    resolved = tuple(
        _FromStep(o.mutation_id) if isinstance(o, _Held) and o.mutation_id in stepped else o
        for o in outcomes
    )
    new_holds = tuple(
        HeldMutation(
            mutation_id=s.mutation_id,
            seq=s.seq,
            body_hash=s.body_hash,
            mutation=s.mutation,
            received_at=s.received_at,
        )
        for s in pending.values()
        if not s.from_hold
    )
    still_held = {
        s.mutation_id: HeldMutation(
            mutation_id=s.mutation_id,
            seq=s.seq,
            body_hash=s.body_hash,
            mutation=s.mutation,
            received_at=s.received_at,
        )
        for s in pending.values()
    }
    return PushPlan(
        device_id=device_id,
        steps=tuple(steps),
        new_holds=new_holds,
        next_seq=next_seq,
        received_at=received_at,
        outcomes=resolved,
        held=still_held,
    )


def push_response(
    plan: PushPlan,
    results: Mapping[UUID, MutationResult],
    *,
    stored: Mapping[UUID, StoredMutation] | None = None,
    clock_offset_seconds: float | None = None,
) -> PushResponse:
    """The answer to the batch, one result per mutation in the order sent.

    ``results`` maps each step's mutation id to the result the storage layer stored for it;
    ``stored`` (the same mapping given to ``plan_push``) lets an id clash name the stored version.
    """
    stored = stored or {}
    out: list[MutationResult] = []
    for outcome in plan.outcomes:
        if isinstance(outcome, _Ready):
            out.append(outcome.result)
        elif isinstance(outcome, _FromStep):
            out.append(results[outcome.mutation_id])
        elif isinstance(outcome, _Held):
            waiting = plan.held[outcome.mutation_id]
            out.append(
                _result(
                    waiting.mutation_id,
                    waiting.seq,
                    MutationStatus.HELD,
                    waiting.received_at,
                    ReasonCode.WAITING_FOR_PREDECESSOR,
                )
            )
        else:
            winner = results.get(outcome.winner)
            if winner is None and outcome.winner in stored:
                winner = stored[outcome.winner].result
            # The loser is not stored; answering with the winner's receive time keeps a resend's
            # answer identical.
            if winner is not None:
                first_received = winner.received_at
            elif outcome.winner in plan.held:
                first_received = plan.held[outcome.winner].received_at
            else:
                first_received = plan.received_at
            out.append(
                _result(
                    outcome.winner,
                    outcome.seq,
                    MutationStatus.REJECTED,
                    first_received,
                    ReasonCode.ID_REUSED_WITH_DIFFERENT_BODY,
                    version=winner.version if winner else None,
                    record_id=winner.record_id if winner else None,
                )
            )
    return PushResponse(
        results=tuple(out),
        next_expected_seq=plan.next_seq,
        received_at=plan.received_at,
        clock_offset_seconds=clock_offset_seconds,
    )
