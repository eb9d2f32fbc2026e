"""Exactly-once push: ordering, holding, duplicates and id reuse, checked against a fake ledger."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.codec import InvalidMutation
from sync.messages import (
    Mutation,
    MutationEnvelope,
    MutationResult,
    MutationStatus,
    PushResponse,
    ReasonCode,
)
from sync.push import (
    DeviceLedger,
    HeldMutation,
    StoredMutation,
    envelope_of,
    mutation_body_hash,
    plan_push,
    push_response,
)
from tests.unit.sync.samples import NOW, create_report

DEVICE = uuid.UUID("1d2c3b4a-0000-4000-8000-000000000001")
OTHER_DEVICE = uuid.UUID("1d2c3b4a-0000-4000-8000-000000000002")
Item = Mutation | InvalidMutation


class FakeDeviceStore:
    """What the storage layer keeps for one device, executing plans the way it must."""

    def __init__(self, device_id: uuid.UUID = DEVICE, bad: frozenset[int] = frozenset()) -> None:
        self.device_id = device_id
        self.ledger = DeviceLedger(device_id=device_id)
        self.stored: dict[uuid.UUID, StoredMutation] = {}
        self.held: dict[uuid.UUID, HeldMutation] = {}
        self.log: list[tuple[int, uuid.UUID]] = []
        self.applied: list[uuid.UUID] = []
        self.bad = bad  # seqs whose content the executor refuses
        self.pushes = 0

    def snapshot(self) -> object:
        return (self.ledger, dict(self.stored), dict(self.held), list(self.log))

    def push(self, batch: Sequence[Item], *, hold_window: int = 1000) -> PushResponse:
        self.pushes += 1
        received_at = NOW + dt.timedelta(minutes=self.pushes)
        ids = {envelope_of(m)[0] for m in batch}
        stored = {i: self.stored[i] for i in ids if i in self.stored}
        plan = plan_push(
            self.ledger,
            batch,
            stored=stored,
            held=list(self.held.values()),
            received_at=received_at,
            hold_window=hold_window,
        )
        results: dict[uuid.UUID, MutationResult] = {}
        for step in plan.steps:
            assert step.mutation_id not in self.stored, "a stored result is never rewritten"
            assert step.seq == self.ledger.next_seq + len(results)
            result = step.preset_result or self.apply(step.mutation, step.received_at)
            self.stored[step.mutation_id] = StoredMutation(
                mutation_id=step.mutation_id,
                device_id=self.device_id,
                seq=step.seq,
                body_hash=step.body_hash,
                result=result,
            )
            self.log.append((step.seq, step.mutation_id))
            if step.from_hold:
                del self.held[step.mutation_id]
            results[step.mutation_id] = result
        for hold in plan.new_holds:
            assert hold.mutation_id not in self.held
            self.held[hold.mutation_id] = hold
        self.ledger = DeviceLedger(device_id=self.device_id, next_seq=plan.next_seq)
        response = push_response(plan, results, stored=stored)
        assert len(response.results) == len(batch)
        return response

    def apply(self, mutation: Item, received_at: dt.datetime) -> MutationResult:
        assert not isinstance(mutation, InvalidMutation)
        if mutation.seq in self.bad:
            status, reason, version = MutationStatus.REJECTED, ReasonCode.UNKNOWN_CATEGORY, None
        else:
            status, reason, version = MutationStatus.APPLIED, None, 1
            self.applied.append(mutation.mutation_id)
        return MutationResult(
            mutation_id=mutation.mutation_id,
            seq=mutation.seq,
            status=status,
            reason=reason,
            version=version,
            received_at=received_at,
        )


def invalid(seq: int) -> InvalidMutation:
    body = {"kind": "create_report", "seq": seq, "mutation_id": str(uuid.UUID(int=seq))}
    return InvalidMutation(
        envelope=MutationEnvelope(kind="create_report", seq=seq, mutation_id=uuid.UUID(int=seq)),
        error="Object missing required field `report`",
        unknown_kind=False,
        body=body,
        raw=msgspec.json.encode(body),
    )


def variant(seq: int) -> Mutation:
    """Same mutation id as ``create_report(seq)``, different body."""
    return create_report(seq, recorded_at=NOW - dt.timedelta(days=1))


def statuses(response: PushResponse) -> list[str]:
    return [r.status.value for r in response.results]


def test_in_order_batch_is_applied() -> None:
    store = FakeDeviceStore()
    response = store.push([create_report(1), create_report(2)])
    assert statuses(response) == ["applied", "applied"]
    assert response.next_expected_seq == 3
    assert [s for s, _ in store.log] == [1, 2]


def test_reversed_batch_is_applied_in_seq_order() -> None:
    store = FakeDeviceStore()
    response = store.push([create_report(3), create_report(1), create_report(2)])
    assert statuses(response) == ["applied"] * 3
    assert [s for s, _ in store.log] == [1, 2, 3]


def test_gap_is_held_then_released_in_cascade() -> None:
    store = FakeDeviceStore()
    first = store.push([create_report(3), create_report(2)])
    assert statuses(first) == ["held", "held"]
    assert {r.reason for r in first.results} == {ReasonCode.WAITING_FOR_PREDECESSOR}
    assert first.next_expected_seq == 1
    assert store.log == []
    second = store.push([create_report(1)])
    assert statuses(second) == ["applied"]
    assert [s for s, _ in store.log] == [1, 2, 3]
    assert store.held == {}
    # The device learns the held ones' results by resending them; they keep their first receipt.
    third = store.push([create_report(2), create_report(3)])
    assert statuses(third) == ["applied", "applied"]
    assert third.results[0].received_at == first.results[1].received_at


def test_resend_returns_the_first_result_verbatim() -> None:
    store = FakeDeviceStore()
    first = store.push([create_report(1)])
    before = store.snapshot()
    again = store.push([create_report(1, attempt=3)])
    assert again.results == first.results
    assert store.snapshot() == before


def test_same_id_with_a_different_body_is_refused_with_the_stored_version() -> None:
    store = FakeDeviceStore()
    store.push([create_report(1)])
    response = store.push([variant(1)])
    (result,) = response.results
    assert result.status is MutationStatus.REJECTED
    assert result.reason is ReasonCode.ID_REUSED_WITH_DIFFERENT_BODY
    assert result.version == 1
    assert store.applied == [uuid.UUID(int=1)]


def test_same_id_from_another_device_reveals_nothing() -> None:
    mine = FakeDeviceStore()
    mine.push([create_report(1)])
    ledger = DeviceLedger(device_id=OTHER_DEVICE)
    plan = plan_push(ledger, [create_report(1)], stored=mine.stored, held=[], received_at=NOW)
    (result,) = push_response(plan, {}, stored=mine.stored).results
    assert result.reason is ReasonCode.ID_REUSED_WITH_DIFFERENT_BODY
    assert result.version is None
    assert plan.steps == ()


def test_a_bad_mutation_consumes_its_seq_and_never_blocks_the_next() -> None:
    store = FakeDeviceStore(bad=frozenset({2}))
    response = store.push([create_report(1), create_report(2), invalid(3), create_report(4)])
    assert statuses(response) == ["applied", "rejected", "rejected", "applied"]
    assert response.results[1].reason is ReasonCode.UNKNOWN_CATEGORY
    assert response.results[2].reason is ReasonCode.INVALID
    assert response.results[2].detail is not None
    assert response.next_expected_seq == 5


def test_an_invalid_mutation_waits_for_its_turn_like_any_other() -> None:
    store = FakeDeviceStore()
    first = store.push([invalid(2)])
    assert statuses(first) == ["held"]
    second = store.push([create_report(1), invalid(2)])
    assert statuses(second) == ["applied", "rejected"]


def test_a_used_seq_under_a_new_id_is_refused() -> None:
    store = FakeDeviceStore()
    store.push([create_report(1)])
    impostor = create_report(1, mutation_id=uuid.uuid4())
    (result,) = store.push([impostor]).results
    assert result.reason is ReasonCode.SEQ_ALREADY_USED
    held_impostor = create_report(5, mutation_id=uuid.uuid4())
    store.push([create_report(5)])
    (result,) = store.push([held_impostor]).results
    assert result.reason is ReasonCode.SEQ_ALREADY_USED
    assert len(store.held) == 1


def test_too_far_ahead_is_refused_for_now_and_not_stored() -> None:
    store = FakeDeviceStore()
    (result,) = store.push([create_report(5)], hold_window=4).results
    assert result.reason is ReasonCode.SEQ_GAP
    assert store.held == {}
    assert store.stored == {}


def test_repeats_inside_one_batch() -> None:
    store = FakeDeviceStore()
    response = store.push([create_report(1), create_report(1), variant(1)])
    assert response.results[0] == response.results[1]
    assert response.results[2].reason is ReasonCode.ID_REUSED_WITH_DIFFERENT_BODY
    assert response.results[2].version == 1
    assert store.applied == [uuid.UUID(int=1)]


def test_body_hash_ignores_transport_fields_but_not_content_or_device() -> None:
    base = mutation_body_hash(DEVICE, create_report(1))
    assert mutation_body_hash(DEVICE, create_report(1, attempt=7)) == base
    assert mutation_body_hash(DEVICE, variant(1)) != base
    assert mutation_body_hash(OTHER_DEVICE, create_report(1)) != base
    assert len(base) == 64


# --- properties -----------------------------------------------------------------------------


@st.composite
def schedules(draw: st.DrawFn) -> tuple[int, frozenset[int], frozenset[int], list[list[Item]]]:
    n = draw(st.integers(1, 9))
    invalid_seqs = draw(st.frozensets(st.integers(1, n), max_size=2))
    bad = draw(st.frozensets(st.integers(1, n), max_size=2))
    with_variants = draw(st.booleans())

    def item(seq: int, use_variant: bool) -> Item:
        if use_variant and with_variants:
            return variant(seq)
        return invalid(seq) if seq in invalid_seqs else create_report(seq)

    batch = st.lists(
        st.builds(item, st.integers(1, n), st.sampled_from([False, False, False, True])),
        min_size=1,
        max_size=6,
    )
    batches = draw(st.lists(batch, min_size=1, max_size=5))
    # Retries: any earlier batch may be sent again, any number of times, in any order.
    order = draw(st.lists(st.integers(0, len(batches) - 1), max_size=8))
    sends = batches + [batches[i] for i in order]
    final = draw(st.permutations([item(s, False) for s in range(1, n + 1)]))
    return n, invalid_seqs, bad, [*sends, list(final)]


@settings(max_examples=300, deadline=None)
@given(schedules())
def test_any_schedule_applies_each_mutation_once_in_seq_order(
    case: tuple[int, frozenset[int], frozenset[int], list[list[Item]]],
) -> None:
    n, invalid_seqs, bad, sends = case
    store = FakeDeviceStore(bad=bad)
    seen_final: dict[tuple[uuid.UUID, str], MutationResult] = {}
    responses = []
    for batch in sends:
        response = store.push(batch)
        responses.append(response)
        for item, result in zip(batch, response.results, strict=True):
            mutation_id, seq = envelope_of(item)
            assert (result.mutation_id, result.seq) == (mutation_id, seq)
            key = (mutation_id, mutation_body_hash(DEVICE, item))
            winner = store.stored.get(mutation_id)
            if result.reason is ReasonCode.ID_REUSED_WITH_DIFFERENT_BODY:
                assert winner is None or winner.body_hash != key[1]
                continue
            if result.status is MutationStatus.HELD:
                assert seq >= response.next_expected_seq
                continue
            # A final result is the stored one, and never changes afterwards.
            assert winner is not None
            assert winner.result == result
            assert seen_final.setdefault(key, result) == result

    # Every seq consumed exactly once, in order, whatever arrived when.
    assert [s for s, _ in store.log] == list(range(1, n + 1))
    assert store.held == {}
    assert len(store.applied) == len(set(store.applied))
    expected_applied = {
        uuid.UUID(int=s)
        for s in range(1, n + 1)
        if s not in bad
        and s not in invalid_seqs
        and store.stored[uuid.UUID(int=s)].body_hash == mutation_body_hash(DEVICE, create_report(s))
    }
    winners_by_variant = {
        uuid.UUID(int=s)
        for s in range(1, n + 1)
        if s not in bad
        and store.stored[uuid.UUID(int=s)].body_hash == mutation_body_hash(DEVICE, variant(s))
    }
    assert set(store.applied) == expected_applied | winners_by_variant

    # Resending any batch now changes nothing and answers exactly as before.
    before = store.snapshot()
    final_answers = [store.push(batch) for batch in sends]
    assert store.snapshot() == before
    again = [store.push(batch) for batch in sends]
    assert [a.results for a in again] == [f.results for f in final_answers]
    for answer in final_answers:
        assert MutationStatus.HELD not in {r.status for r in answer.results}
