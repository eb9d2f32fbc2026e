"""Matching reports as they arrive: incidents, registry entities and persons, with decisions kept.

Each organisation's records are held in an in-process index per job, refreshed from the database
before each match (for incidents and persons: every report matched since the last read, by the
transaction that wrote its membership, and one org's matching of a job runs one transaction at a
time across processes), so matching one new report costs a candidate lookup, not a scan, and
sees every report matched before it. A report that changes after it was matched (amended,
withdrawn, redacted) is matched again as it is now (`rematch_report`). Every link is a
stored decision with its explanation and the state it replaced; undoing a decision puts that
state back exactly, and human decisions are labels for refitting the model.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from cases.matching.blocking import CandidateIndex
from cases.matching.engine import Matcher, ScoredCandidate
from cases.matching.jobs import JobName, job_spec
from cases.matching.linkage import dedup_thresholds_for_f1, with_link_threshold_for_precision
from cases.matching.model import MatchModel
from cases.matching.records import EntityRecord, IncidentRecord, PersonRecord
from cases.reports import PartyReference, Report
from storage.case_links import MATCHING, on_incident_split, open_case_for_incident
from storage.cases import CaseWriter
from storage.db import Conn
from storage.errors import NotFound, StorageError
from storage.jobs import JobQueue
from storage.keyring import Keyring
from storage.match_settings import PinnedThresholds, pinned_thresholds, with_pin
from storage.queries import Q
from storage.reports import SealedParts, sealed_context

__all__ = [
    "MIN_LABELS",
    "DecisionConflict",
    "MatchingCache",
    "decide",
    "match_report",
    "refit_model",
    "rejoin_persons",
    "rematch_report",
    "undo_decision",
]

# Below this many human decisions (with both answers present) a refit uses EM on the org's own
# candidate pairs instead of the labels.
MIN_LABELS = 30
MIN_RECORDS_FOR_EM = 50
# Reports matched again per `rejoin_persons` call (one job's transaction).
REJOIN_BATCH = 200

Job = JobName
_ENCODER = msgspec.json.Encoder()
_ENTITY_KINDS = {"employer": "employer", "recruitment_agency": "agency", "sub_agent": "sub_agent"}


class DecisionConflict(StorageError):
    """The decision is not in a state that allows this (e.g. undoing a rejected suggestion)."""


@dataclass
class _Corpus:
    matcher: Matcher[Any, Any]
    index: CandidateIndex[Any]
    features: dict[str, Any] = field(default_factory=dict)
    records: dict[str, Any] = field(default_factory=dict)
    # Incidents and persons: each filed report's index position, and the transaction that
    # wrote the membership it was read at; a membership written again (the report was moved,
    # amended, withdrawn or redacted) is read again and the report filed anew.
    filed: dict[str, tuple[int, str]] = field(default_factory=dict)
    # Incidents and persons: every membership a transaction below this id wrote has been read
    # (`match_horizon`); the next read starts here, so one that committed late is not missed.
    horizon: str = "0"
    stamp: Any = None
    # `matcher` is this one with the org's pinned thresholds (`storage.match_settings`), if any.
    # Refits fit from the unpinned one, so a pin never ends up in a fitted model.
    unpinned: Matcher[Any, Any] = field(init=False)
    pin: PinnedThresholds | None = None

    def __post_init__(self) -> None:
        self.unpinned = self.matcher


class MatchingCache:
    """Per-process indexes, one per (organisation, job)."""

    def __init__(self) -> None:
        self._corpora: dict[tuple[uuid.UUID, Job], _Corpus] = {}

    async def corpus(self, conn: Conn, org_id: uuid.UUID, job: Job) -> _Corpus:
        key = (org_id, job)
        corpus = self._corpora.get(key)
        if corpus is None:
            matcher = await _matcher(conn, org_id, job)
            corpus = _Corpus(matcher, matcher.new_index())
            self._corpora[key] = corpus
        # Read at every use, so a pin an org admin sets or clears (in the API process) is in
        # force at this process's next match. The index does not depend on thresholds.
        pin = await pinned_thresholds(conn, org_id, job)
        if pin != corpus.pin:
            corpus.matcher, corpus.pin = with_pin(corpus.unpinned, pin), pin
        return corpus

    async def refresh_persons(self, conn: Conn, keyring: Keyring) -> int:
        """Bring every person index this process holds up to date now, each under its matching
        lock in a transaction of its own (``conn`` must not be in one); returns how many.

        A redacted, withdrawn or amended report is otherwise dropped from a process's index only
        at its next person match in that organisation, which in a quiet one may be days away;
        the worker calls this every minute (`server.matching_jobs.refresh_held_indexes`), so a
        redacted identity is not kept decrypted in any process's memory for longer."""
        held = [(org, corpus) for (org, job), corpus in self._corpora.items() if job == "person"]
        for org_id, corpus in held:
            async with conn.transaction():
                await conn.execute(Q.lock_matching, org_id, "person")
                await _refresh_persons(conn, keyring, org_id, corpus)
        return len(held)

    def forget(self, org_id: uuid.UUID) -> None:
        for key in [k for k in self._corpora if k[0] == org_id]:
            del self._corpora[key]


async def _matcher(conn: Conn, org_id: uuid.UUID, job: Job) -> Matcher[Any, Any]:
    stored = await conn.fetchval(Q.get_match_model, org_id, job)
    model = msgspec.json.decode(stored, type=MatchModel) if stored else None
    matcher: Matcher[Any, Any] = Matcher(job_spec(job), model)
    if model is not None and matcher.model is not model:
        # The stored model predates the engine's comparison levels, so the matcher set it aside
        # for the starting model: refit from the org's own data instead of waiting for someone
        # to ask (the same job and dedupe key as POST /v1/matching/{job}/refit).
        await JobQueue(conn).enqueue(
            "matching.refit", {"job": job}, org_id=org_id, dedupe_key=f"{org_id}:{job}"
        )
    return matcher


def _add(corpus: _Corpus, record: Any) -> None:
    features = corpus.matcher.job.prepare(record)
    if record.id in corpus.features:
        return
    corpus.index.add(features)
    corpus.features[record.id] = features
    corpus.records[record.id] = record


def _file(corpus: _Corpus, report_id: str, record: Any | None, xid: str) -> None:
    """File a report's current features (None: drop it) as of its membership written by `xid`."""
    known = corpus.filed.pop(report_id, None)
    if known is not None and record is not None and corpus.records[report_id] == record:
        corpus.filed[report_id] = (known[0], xid)  # moved between groups, not changed
        return
    if known is not None:
        corpus.index.discard(known[0])
        del corpus.features[report_id], corpus.records[report_id]
    if record is None:
        return
    features = corpus.matcher.job.prepare(record)
    corpus.filed[report_id] = (corpus.index.add(features), xid)
    corpus.features[report_id] = features
    corpus.records[report_id] = record


def _read_at(corpus: _Corpus, report_id: str, xid: str) -> bool:
    """Whether the index holds the report as its membership written by `xid` left it."""
    known = corpus.filed.get(report_id)
    return known is not None and known[1] == xid


def incident_record(row: Any, report: Report | None = None) -> IncidentRecord:
    employer = report.employer if report else _party(row["employer"])
    narrative = report.narrative if report else (row["narrative"] or "")
    return IncidentRecord(
        id=str(row["id"]),
        occurred_at=report.occurred_at if report else row["occurred_at"],
        lat=report.location.lat if report else row["latitude"],
        lon=report.location.lon if report else row["longitude"],
        categories=tuple(report.categories if report else row["categories"]),
        employer_ids=(str(employer.entity_id),) if employer and employer.entity_id else (),
        employer_names=(employer.name,) if employer and employer.name else (),
        narrative_tokens=tuple(narrative.lower().split()[:300]),
        monitor_id=str(row["monitor_id"]),
    )


def _party(raw: Any) -> PartyReference | None:
    if raw is None:
        return None
    return msgspec.json.decode(raw, type=PartyReference) if isinstance(raw, str) else None


def person_record(
    report_id: uuid.UUID, parts: SealedParts, country: str | None
) -> PersonRecord | None:
    worker = parts.worker
    if worker is None or not (worker.name or worker.passport_number or worker.national_id_number):
        return None
    return PersonRecord(
        id=str(report_id),
        name=worker.name or "",
        dob=worker.date_of_birth,
        id_numbers=tuple(n for n in (worker.passport_number, worker.national_id_number) if n),
        phones=(worker.phone,) if worker.phone else (),
        home_district=worker.home_district,
        country=country,
    )


def mention_record(
    report_id: uuid.UUID, role: str, party: PartyReference, country: str | None
) -> EntityRecord | None:
    if not (party.name or party.phone or party.licence_number):
        return None
    return EntityRecord(
        id=f"{report_id}:{role}",
        kind="mention",
        legal_name=party.name or "",
        licence_numbers=(party.licence_number,) if party.licence_number else (),
        phones=(party.phone,) if party.phone else (),
        country=country,
        address=party.address,
    )


async def _refresh_incidents(conn: Conn, org_id: uuid.UUID, corpus: _Corpus) -> None:
    horizon = await conn.fetchval(Q.match_horizon)
    for row in await conn.fetch(Q.incident_corpus, org_id, corpus.horizon):
        report_id = str(row["id"])
        if not _read_at(corpus, report_id, row["xid"]):
            record = None if row["withdrawn"] else incident_record(row)
            _file(corpus, report_id, record, row["xid"])
    corpus.horizon = horizon


async def _refresh_persons(
    conn: Conn, keyring: Keyring, org_id: uuid.UUID, corpus: _Corpus
) -> None:
    horizon = await conn.fetchval(Q.match_horizon)
    for row in await conn.fetch(Q.person_corpus, org_id, corpus.horizon):
        report_id = str(row["id"])
        if _read_at(corpus, report_id, row["xid"]):
            continue  # read again from the band of transactions running at the last read
        record = None
        if not row["withdrawn"] and row["sealed"] is not None:  # not withdrawn nor redacted
            parts = await keyring.decrypt_struct(
                conn, org_id, row["sealed"], sealed_context(row["id"]), SealedParts
            )
            # With the report's origin country, as when it was matched: a phone written in its
            # national format compares with the same number written internationally.
            record = person_record(row["id"], parts, row["origin_country"])
        _file(corpus, report_id, record, row["xid"])
    corpus.horizon = horizon


async def _refresh_entities(conn: Conn, org_id: uuid.UUID, corpus: _Corpus) -> None:
    stamp = tuple(await conn.fetchrow(Q.entity_corpus_stamp, org_id) or ())
    if stamp == corpus.stamp:
        return
    corpus.index = corpus.matcher.new_index()
    corpus.features = {}
    corpus.records = {}
    for row in await conn.fetch(Q.entity_corpus, org_id):
        _add(
            corpus,
            EntityRecord(
                id=str(row["id"]),
                kind=_ENTITY_KINDS.get(row["kind"], "employer"),  # type: ignore[arg-type]
                legal_name=row["legal_name"],
                aliases=tuple(row["aliases"]),
                licence_numbers=tuple(row["licences"]),
                registration=row["registration_number"],
                phones=tuple(row["phones"]),
                country=row["country"],
                address=row["address"],
            ),
        )
    corpus.stamp = stamp


async def _record_decision(
    conn: Conn,
    org_id: uuid.UUID,
    job: Job,
    subject: str,
    corpus: _Corpus,
    subject_features: Any,
    candidate: ScoredCandidate,
    status: str,
    previous: dict[str, Any] | None,
) -> uuid.UUID | None:
    explanation = corpus.matcher.explain_features(
        subject_features, corpus.features[candidate.id], corpus.index.frequencies
    )
    decision_id: uuid.UUID | None = await conn.fetchval(
        Q.insert_decision,
        org_id,
        job,
        subject,
        candidate.id,
        candidate.probability,
        candidate.total_weight,
        _ENCODER.encode(explanation).decode(),
        candidate.decision,
        status,
        "matcher",
        _ENCODER.encode(previous).decode() if previous is not None else None,
        corpus.matcher.model.method,
    )
    return decision_id


async def match_report(
    conn: Conn, keyring: Keyring, cache: MatchingCache, org_id: uuid.UUID, report_id: uuid.UUID
) -> None:
    """Match one report for all three jobs. Running it again for the same report changes nothing."""
    row = await conn.fetchrow(Q.report_for_matching, org_id, report_id)
    if row is None or row["deleted_at"] is not None:
        return
    report = msgspec.json.decode(row["content"], type=Report)
    await _match_incident(conn, cache, org_id, row, report)
    await _match_entities(conn, cache, org_id, report)
    if row["sealed"] is not None:
        parts = await keyring.decrypt_struct(
            conn, org_id, row["sealed"], sealed_context(report_id), SealedParts
        )
        await _match_person(conn, keyring, cache, org_id, report, parts)


async def rematch_report(
    conn: Conn, keyring: Keyring, cache: MatchingCache, org_id: uuid.UUID, report_id: uuid.UUID
) -> None:
    """Bring one report's matching up to date after it changed: amended by its monitor (or a
    conflict resolved), withdrawn, or redacted. Running it again changes nothing.

    Every process's index takes the report's current features, or drops a withdrawn or redacted
    report: its memberships are written again by this transaction (last), so each process reads
    them again (`_refresh_incidents`, `_refresh_persons`). Its entity links are reconsidered
    (`_reconsider_entity_links`). For each job the report has not been matched in yet, it is
    matched as a new report: an amendment that adds the worker's identity or the employer's
    name is matched then. A report already in an incident or person is not
    moved out of it by its amendment (an incident holds a case, whose timeline notes a report
    that no longer agrees with the others: `_note_if_apart`; a human undoes a link), except
    that the matcher undoes its own link of a report to a person the report no longer agrees
    with (`_unlink_if_stale`); a report alone in its person joins another person as after a
    refit, and candidates outside its group that the amended report now resembles become
    suggestions in the review queue (none with a report it has a decision with either way).
    """
    row = await conn.fetchrow(Q.report_for_matching, org_id, report_id)
    if row is None:
        return
    live = row["deleted_at"] is None
    report = msgspec.json.decode(row["content"], type=Report)
    # Memberships are written last, after any decision: a staff decision locks the decision
    # row before the membership, and so must this (two orders would deadlock).
    await conn.execute(Q.lock_matching, org_id, "incident")
    if await conn.fetchval(Q.incident_of_report, report_id) is None:
        if live:
            await _match_incident(conn, cache, org_id, row, report)
    else:
        corpus = await cache.corpus(conn, org_id, "incident")
        await _refresh_incidents(conn, org_id, corpus)
        _file(corpus, str(report_id), incident_record(row, report) if live else None, "")
        if live:
            await _suggest(conn, corpus, org_id, "incident", report_id, Q.incident_of_report)
        _stamp(corpus, report_id, await conn.fetchval(Q.touch_incident_member, report_id))
        if live:  # after the membership: a staff decision locks it before the case
            await _note_if_apart(conn, corpus, org_id, report_id, row["version"])
    if live:
        await _reconsider_entity_links(conn, cache, org_id, report)
        await _match_entities(conn, cache, org_id, report)
    parts = None
    if row["sealed"] is not None:
        parts = await keyring.decrypt_struct(
            conn, org_id, row["sealed"], sealed_context(report_id), SealedParts
        )
    await conn.execute(Q.lock_matching, org_id, "person")
    if await conn.fetchval(Q.person_of_report, report_id) is None:
        if live and parts is not None:
            await _match_person(conn, keyring, cache, org_id, report, parts)
        return
    corpus = await cache.corpus(conn, org_id, "person")
    await _refresh_persons(conn, keyring, org_id, corpus)
    named = person_record(report_id, parts, report.origin_country) if parts else None
    record = named if live else None
    _file(corpus, str(report_id), record, "")
    if record is not None:
        await _rematch_person(conn, corpus, org_id, report_id)
    elif named is None:
        await _leave_person(conn, org_id, report_id)
    _stamp(corpus, report_id, await conn.fetchval(Q.touch_person_member, report_id))


async def _note_if_apart(
    conn: Conn, corpus: _Corpus, org_id: uuid.UUID, report_id: uuid.UUID, version: int
) -> None:
    """A changed report that would not join its incident's other reports now (`would_join`)
    stays in the incident (moving it would move it between cases), and the case following the
    incident says so on its timeline (`report_apart`, once per version of the report), with the
    link that put it there, for the case team to undo the link or keep it."""
    subject = str(report_id)
    features = corpus.features[subject]
    members = await _others_in_group(conn, corpus, Q.incident_group_of_report, report_id)
    if not members or corpus.matcher.would_join(features, members, corpus.index.frequencies):
        return
    membership = await conn.fetchrow(Q.incident_membership, report_id)
    assert membership is not None  # touched above, under the incident lock
    incident, decision = membership["incident_id"], membership["decision_id"]
    case_id = await conn.fetchval(Q.case_by_incident, org_id, incident)
    if case_id is None or await conn.fetchval(Q.report_apart_noted, case_id, subject, version):
        return
    _, mean = corpus.matcher.group_agreement(features, members, corpus.index.frequencies)
    writer = await CaseWriter.lock(conn, org_id, case_id, None)
    await writer.record(
        "report_apart",
        MATCHING,
        {
            "report": subject,
            "report_version": version,
            "incident": str(incident),
            "decision": str(decision) if decision is not None else None,
            "mean_probability": round(mean, 4),
        },
    )


async def _others_in_group(
    conn: Conn, corpus: _Corpus, group_query: str, report_id: uuid.UUID
) -> list[Any]:
    """The indexed features of the other reports of a report's incident or person (at most
    50, oldest first, as `group_query` gives them)."""
    subject = str(report_id)
    return [
        corpus.features[r["report_id"]]
        for r in await conn.fetch(group_query, report_id)
        if r["report_id"] != subject and r["report_id"] in corpus.features
    ]


def _stamp(corpus: _Corpus, report_id: uuid.UUID, xid: str) -> None:
    """The index holds the report as its membership written by `xid` left it."""
    known = corpus.filed.get(str(report_id))
    if known is not None:
        corpus.filed[str(report_id)] = (known[0], xid)


async def _rematch_person(
    conn: Conn, corpus: _Corpus, org_id: uuid.UUID, report_id: uuid.UUID
) -> None:
    """A changed report already in a person (`rematch_report`): out of a person the matcher
    put it in that it no longer agrees with, into another if alone, else suggestions."""
    await _unlink_if_stale(conn, corpus, org_id, report_id)
    if await conn.fetchval(Q.person_alone_undecided, report_id):
        own = await conn.fetchval(Q.person_of_report, report_id)
        refused = await _refused_pairs(conn, org_id)
        if await _join_alone(conn, corpus, org_id, refused, report_id, own) is not None:
            return
    await _suggest(conn, corpus, org_id, "person", report_id, Q.person_of_report)


async def _reconsider_entity_links(
    conn: Conn, cache: MatchingCache, org_id: uuid.UUID, report: Report
) -> None:
    """A changed report's employer and recruiter links, before its unlinked roles are matched
    (`_match_entities`): a link the case team accepted stays; any other stays only if the report
    still leads to that entity (the monitor's pick is it, or the mention's best candidate is it,
    as a link). Otherwise it goes, the matcher's own decision marked undone by the matcher (not
    a label), and the role is matched again: surge scans count reports by these links, and a
    corrected employer must not keep counting against the old one."""
    for role, party, country in (
        ("employer", report.employer, report.destination_country),
        ("recruiter", report.recruiter, report.origin_country),
    ):
        link = await conn.fetchrow(Q.entity_link_state, report.id, role)
        if link is None or link["by_staff"]:
            continue
        if party is not None and party.entity_id is not None:
            holds = party.entity_id == link["entity_id"]
        else:
            holds = False
            record = mention_record(report.id, role, party, country) if party else None
            if record is not None:
                corpus = await cache.corpus(conn, org_id, "entity")
                await _refresh_entities(conn, org_id, corpus)
                best = corpus.matcher.match_one(record, corpus.index, limit=3)
                holds = bool(best) and (best[0].id, best[0].decision) == (
                    str(link["entity_id"]),
                    "link",
                )
        if holds:
            continue
        decision = link["decision_id"]
        if decision is not None:  # locked before the link, as a staff decision locks them
            await conn.fetchrow(Q.lock_decision, org_id, decision)
        # Only the link read above: one someone on staff has just put in its place stays.
        deleted = await conn.fetchval(
            Q.delete_entity_link_if, report.id, role, link["entity_id"], decision
        )
        if deleted and decision is not None:
            await conn.execute(Q.set_decision_status, org_id, decision, "undone", "matcher", None)


async def _unlink_if_stale(
    conn: Conn, corpus: _Corpus, org_id: uuid.UUID, report_id: uuid.UUID
) -> None:
    """A report the matcher joined to a person, and that changed since, stays there only if
    the worker's rule would join it now (`Matcher.would_join`); otherwise the matcher undoes its
    own link (the report goes back to the person it had before, as an undo by staff would put
    it). Not a label: the pair may be joined again if the report changes back."""
    link = await conn.fetchrow(Q.matcher_person_link, report_id)
    if link is None:  # alone, or joined by someone on staff
        return
    subject = str(report_id)
    members = await _others_in_group(conn, corpus, Q.person_group_of_report, report_id)
    if corpus.matcher.would_join(corpus.features[subject], members, corpus.index.frequencies):
        return
    # The decision locked before the membership, in the order a staff undo locks them, and
    # the link read again under it: someone on staff may have just undone or replaced it.
    await conn.fetchrow(Q.lock_decision, org_id, link["id"])
    again = await conn.fetchrow(Q.matcher_person_link, report_id)
    if again is None or again["id"] != link["id"]:
        return
    await _restore(conn, org_id, "person", subject, msgspec.json.decode(link["previous"]))
    await conn.execute(Q.set_decision_status, org_id, link["id"], "undone", "matcher", None)


async def _leave_person(conn: Conn, org_id: uuid.UUID, report_id: uuid.UUID) -> None:
    """A report that names no worker any more (the identity removed by an amendment, or
    redacted by retention) leaves its person, whoever put it there: the person's view, its
    cluster and the case's person links no longer list it, and nothing of the erased identity
    is kept by association. The matcher's own link that put it there is marked undone by the
    matcher (not a label); a decision someone on staff made stays as it is (their label). The
    report's other reports' links are left as they are. Withdrawn reports that still name the
    worker keep their person, as they keep their incident."""
    link = await conn.fetchrow(Q.matcher_person_link, report_id)
    if link is not None:
        # Decision first, then membership: the order a staff undo locks them in.
        await conn.fetchrow(Q.lock_decision, org_id, link["id"])
        again = await conn.fetchrow(Q.matcher_person_link, report_id)
        if again is not None and again["id"] == link["id"]:
            await conn.execute(Q.set_decision_status, org_id, link["id"], "undone", "matcher", None)
    await conn.execute(Q.leave_person, report_id)


async def _suggest(
    conn: Conn, corpus: _Corpus, org_id: uuid.UUID, job: Job, report_id: uuid.UUID, group: str
) -> None:
    """Review suggestions for a matched report that changed: its candidates in another group
    (`group`: the query giving a report's incident or person) it has no decision with."""
    subject = str(report_id)
    features = corpus.features[subject]
    own = await conn.fetchval(group, report_id)
    decided = {r["partner"] for r in await conn.fetch(Q.decided_partners, org_id, job, subject)}
    for candidate in corpus.matcher.match_one(corpus.records[subject], corpus.index, limit=3):
        if candidate.decision == "no_link" or candidate.id in decided:
            continue
        if await conn.fetchval(group, uuid.UUID(candidate.id)) == own:
            continue
        # As a suggestion whatever its score: an amendment never moves a report by itself.
        await _record_decision(
            conn, org_id, job, subject, corpus, features, candidate, "pending_review", None
        )


async def _match_incident(
    conn: Conn, cache: MatchingCache, org_id: uuid.UUID, row: Any, report: Report
) -> None:
    await conn.execute(Q.lock_matching, org_id, "incident")
    if await conn.fetchval(Q.incident_of_report, report.id) is not None:
        return
    corpus = await cache.corpus(conn, org_id, "incident")
    await _refresh_incidents(conn, org_id, corpus)
    record = incident_record(row, report)
    features = corpus.matcher.job.prepare(record)
    # Its own incident first, so that undoing a later link can put it back exactly here.
    own = await conn.fetchval(Q.insert_incident, org_id)
    xid = await conn.fetchval(Q.set_incident_member, report.id, org_id, own, None)
    joined = None
    for candidate in await _join_decisions(conn, corpus, Q.incident_group_of_report, record):
        if candidate.decision == "no_link":
            continue
        if candidate.decision == "link" and joined is None:
            joined = await _incident_for(conn, org_id, uuid.UUID(candidate.id))
            decision = await _record_decision(
                conn, org_id, "incident", str(report.id), corpus, features, candidate,
                "auto_linked", {"incident_id": str(own)},
            )  # fmt: skip
            await conn.execute(Q.set_incident_member, report.id, org_id, joined, decision)
            continue
        other = await conn.fetchval(Q.incident_of_report, uuid.UUID(candidate.id))
        if joined is not None and other == joined:
            continue  # already together
        # Incidents are not merged by the worker (each holds a case): a report that links two
        # leaves the other to the case team, as a suggestion.
        await _record_decision(
            conn, org_id, "incident", str(report.id), corpus, features, candidate,
            "pending_review", None,
        )  # fmt: skip
    _file(corpus, str(report.id), record, xid)  # one transaction, one xid for both writes
    # A case follows every incident: a new one opens, a joined one takes the report in.
    final = await conn.fetchval(Q.incident_of_report, report.id)
    await open_case_for_incident(conn, org_id=org_id, incident_id=final)


async def _join_decisions(
    conn: Conn, corpus: _Corpus, group_query: str, record: Any
) -> list[ScoredCandidate]:
    """A new report's dedup candidates, a link kept only where the candidate's whole group
    agrees with the report on average (`Matcher.join_decisions`)."""
    candidates = corpus.matcher.match_one(record, corpus.index, limit=3)
    groups: dict[str, list[Any]] = {}
    for candidate in candidates:
        if candidate.decision == "link":
            rows = await conn.fetch(group_query, uuid.UUID(candidate.id))
            members = [corpus.features.get(r["report_id"]) for r in rows]
            groups[candidate.id] = [m for m in members if m is not None]
    features = corpus.matcher.job.prepare(record)
    return corpus.matcher.join_decisions(features, candidates, groups, corpus.index.frequencies)


async def _incident_for(conn: Conn, org_id: uuid.UUID, report_id: uuid.UUID) -> uuid.UUID:
    found: uuid.UUID | None = await conn.fetchval(Q.incident_of_report, report_id)
    if found is not None:
        return found
    created: uuid.UUID = await conn.fetchval(Q.insert_incident, org_id)
    await conn.execute(Q.set_incident_member, report_id, org_id, created, None)
    return created


async def _match_entities(
    conn: Conn, cache: MatchingCache, org_id: uuid.UUID, report: Report
) -> None:
    for role, party, country in (
        ("employer", report.employer, report.destination_country),
        ("recruiter", report.recruiter, report.origin_country),
    ):
        if party is None or await conn.fetchval(Q.entity_link_of, report.id, role) is not None:
            continue
        if party.entity_id is not None:
            # Picked from the synced registry on the phone: the monitor's choice is the link.
            if await conn.fetchval(Q.parent_exists, org_id, party.entity_id):
                await conn.execute(
                    Q.set_entity_link, report.id, role, org_id, party.entity_id, None
                )
            continue
        record = mention_record(report.id, role, party, country)
        if record is None:
            continue
        corpus = await cache.corpus(conn, org_id, "entity")
        await _refresh_entities(conn, org_id, corpus)
        features = corpus.matcher.job.prepare(record)
        for candidate in corpus.matcher.match_one(record, corpus.index, limit=3):
            if candidate.decision == "no_link":
                continue
            if candidate.decision == "link":
                decision = await _record_decision(
                    conn, org_id, "entity", record.id, corpus, features, candidate,
                    "auto_linked", {"entity_id": None},
                )  # fmt: skip
                await conn.execute(
                    Q.set_entity_link, report.id, role, org_id, uuid.UUID(candidate.id), decision
                )
                break
            await _record_decision(
                conn, org_id, "entity", record.id, corpus, features, candidate,
                "pending_review", None,
            )  # fmt: skip


async def _match_person(
    conn: Conn,
    keyring: Keyring,
    cache: MatchingCache,
    org_id: uuid.UUID,
    report: Report,
    parts: SealedParts,
) -> None:
    record = person_record(report.id, parts, report.origin_country)
    if record is None:
        return
    await conn.execute(Q.lock_matching, org_id, "person")
    if await conn.fetchval(Q.person_of_report, report.id) is not None:
        return
    corpus = await cache.corpus(conn, org_id, "person")
    await _refresh_persons(conn, keyring, org_id, corpus)
    features = corpus.matcher.job.prepare(record)
    own = await conn.fetchval(Q.insert_person, org_id)
    xid = await conn.fetchval(Q.set_person_member, report.id, org_id, own, None)
    decided = await _join_decisions(conn, corpus, Q.person_group_of_report, record)
    for i, candidate in enumerate(decided):
        if candidate.decision == "no_link":
            continue
        if candidate.decision == "link":
            target = await conn.fetchval(Q.person_of_report, uuid.UUID(candidate.id))
            if target is None:
                target = await conn.fetchval(Q.insert_person, org_id)
                await conn.execute(
                    Q.set_person_member, uuid.UUID(candidate.id), org_id, target, None
                )
            decision = await _record_decision(
                conn, org_id, "person", str(report.id), corpus, features, candidate,
                "auto_linked", {"person_id": str(own)},
            )  # fmt: skip
            await conn.execute(Q.set_person_member, report.id, org_id, target, decision)
            later = decided[i + 1 :]
            await _merge_linked_persons(conn, corpus, org_id, report.id, features, target, later)
            break
        await _record_decision(
            conn, org_id, "person", str(report.id), corpus, features, candidate,
            "pending_review", None,
        )  # fmt: skip
    _file(corpus, str(report.id), record, xid)


async def _merge_linked_persons(
    conn: Conn,
    corpus: _Corpus,
    org_id: uuid.UUID,
    report_id: uuid.UUID,
    features: Any,
    person: uuid.UUID,
    later: Sequence[ScoredCandidate],
) -> None:
    """A new report joined ``person``; its other links (``later``) may lead to other persons.
    Each merges into ``person`` where a batch would merge the two groups
    (`Matcher.merges_into`: the groups agree on average), unless a human said a report of one
    is not the worker of a report of the other. Without this, two reports of one worker that
    arrived before the report linking them stayed two persons for good.

    A merge is the matcher's decision on the pair (new report, linked report), with the
    agreement of the groups as its probability and, as what it replaced, every moved report
    with the decision that had put it in its person: undoing it (`_restore`) puts them back
    exactly. Persons only: an incident holds a case, and cases are merged by people."""
    others: dict[str, list[Any]] = {}
    persons: dict[str, uuid.UUID] = {}
    for candidate in later:
        if candidate.decision != "link":
            continue
        other = await conn.fetchval(Q.person_of_report, uuid.UUID(candidate.id))
        if other is None or other == person or other in persons.values():
            continue
        others[candidate.id] = await _group_features(conn, corpus, uuid.UUID(candidate.id))
        persons[candidate.id] = other
    if not others:
        return
    refused = await _refused_pairs(conn, org_id)
    ours = [str(r["report_id"]) for r in await conn.fetch(Q.person_member_rows, org_id, person)]
    rows = {c: await conn.fetch(Q.person_member_rows, org_id, p) for c, p in persons.items()}

    def apart(candidate_id: str) -> bool:
        theirs = [str(r["report_id"]) for r in rows[candidate_id]]
        return any(frozenset((a, b)) in refused for a in ours for b in theirs)

    others = {c: members for c, members in others.items() if not apart(c)}
    group = [*await _group_features(conn, corpus, report_id), features]
    merges = corpus.matcher.merges_into(group, others, corpus.index.frequencies)
    for candidate_id, agreement in merges:
        if apart(candidate_id):  # refused against a person merged just before
            continue
        moved = rows[candidate_id]
        scored = next(c for c in later if c.id == candidate_id)
        merge = msgspec.structs.replace(scored, probability=agreement)
        previous = {
            "person_id": str(persons[candidate_id]),
            "into": str(person),
            "members": {str(r["report_id"]): _maybe(r["decision_id"]) for r in moved},
        }
        decision = await _record_decision(
            conn, org_id, "person", str(report_id), corpus, features, merge, "auto_linked", previous
        )
        if decision is None:  # the pair has a decision already
            continue
        for row in moved:
            await conn.execute(
                Q.move_person_member, org_id, row["report_id"], person, decision,
                persons[candidate_id],
            )  # fmt: skip
        ours += [str(r["report_id"]) for r in moved]


async def _group_features(conn: Conn, corpus: _Corpus, report_id: uuid.UUID) -> list[Any]:
    """The indexed features of the reports of a report's person (at most 50, oldest first);
    the report itself included if indexed."""
    rows = await conn.fetch(Q.person_group_of_report, report_id)
    return [corpus.features[r["report_id"]] for r in rows if r["report_id"] in corpus.features]


def _maybe(value: uuid.UUID | None) -> str | None:
    return str(value) if value is not None else None


async def rejoin_persons(
    conn: Conn,
    keyring: Keyring,
    cache: MatchingCache,
    org_id: uuid.UUID,
    before: tuple[dt.datetime, uuid.UUID] | None = None,
) -> tuple[int, tuple[dt.datetime, uuid.UUID] | None]:
    """After a refit: match again, with the refitted model, the reports still alone in their
    person that nobody on staff has decided about, newest first (at most REJOIN_BATCH, older
    than the cursor `before`), as the worker matched each report against those before it. An
    org's first reports were matched with the starting model, which links persons only at
    0.95; without this they would stay apart whatever the org's own model says.

    A report joins another's person under the worker's rule (`Matcher.join_decisions`: the
    whole person must agree on average), as the matcher's decision with the new model's score
    and what it replaced, so it can be undone. A suggestion of that pair still awaiting review
    becomes that decision; no new review items are added. A report is left alone when a
    candidate's person holds a report a human said it is not (a rejected or undone decision,
    either way round), or when the candidate has no person yet (its own match is still queued).
    Returns how many joined, and the cursor for the next call (None when none are left).
    """
    await conn.execute(Q.lock_matching, org_id, "person")
    corpus = await cache.corpus(conn, org_id, "person")
    await _refresh_persons(conn, keyring, org_id, corpus)
    refused = await _refused_pairs(conn, org_id)
    at, last = before if before is not None else (None, None)
    rows = await conn.fetch(Q.person_singletons, org_id, at, last, REJOIN_BATCH)
    joined = 0
    grown: set[uuid.UUID] = set()
    for row in rows:
        own = await conn.fetchval(Q.person_of_report, row["report_id"])
        if own in grown:  # another report of this batch has joined it meanwhile
            continue
        person = await _join_alone(conn, corpus, org_id, refused, row["report_id"], own)
        if person is not None:
            grown.add(person)
            joined += 1
    if len(rows) < REJOIN_BATCH:
        return joined, None
    return joined, (rows[-1]["received_at"], rows[-1]["report_id"])


async def _refused_pairs(conn: Conn, org_id: uuid.UUID) -> set[frozenset[str]]:
    """Person pairs a human said are not one worker (rejected, or a link undone), as sets."""
    return {
        frozenset((r["subject_id"], r["candidate_id"]))
        for r in await conn.fetch(Q.match_labels, org_id, "person")
        if r["status"] != "accepted"
    }


async def _join_alone(
    conn: Conn,
    corpus: _Corpus,
    org_id: uuid.UUID,
    refused: set[frozenset[str]],
    report_id: uuid.UUID,
    own: uuid.UUID,
) -> uuid.UUID | None:
    """A report alone in its person (`own`) joins its best candidate's person if the worker's
    rule allows it (`rejoin_persons`); returns the person it joined."""
    subject = str(report_id)
    record = corpus.records.get(subject)
    if record is None:
        return None
    candidates = corpus.matcher.match_one(record, corpus.index, limit=3)
    groups: dict[str, list[str]] = {}
    for candidate in candidates:
        if candidate.decision == "link":
            found = await conn.fetch(Q.person_group_of_report, uuid.UUID(candidate.id))
            groups[candidate.id] = [r["report_id"] for r in found]
    if any(frozenset((subject, m)) in refused for g in groups.values() for m in g):
        return None
    features = corpus.features[subject]
    decided = corpus.matcher.join_decisions(
        features,
        candidates,
        {c: [corpus.features[m] for m in g if m in corpus.features] for c, g in groups.items()},
        corpus.index.frequencies,
    )
    target = next((c for c in decided if c.decision == "link"), None)
    if target is None:
        return None
    person: uuid.UUID | None = await conn.fetchval(Q.person_of_report, uuid.UUID(target.id))
    if person is None:  # the candidate's own match is still queued
        return None
    explanation = corpus.matcher.explain_features(
        features, corpus.features[target.id], corpus.index.frequencies
    )
    decision = await conn.fetchval(
        Q.link_or_settle_decision, org_id, "person", subject, target.id, target.probability,
        target.total_weight, _ENCODER.encode(explanation).decode(),
        _ENCODER.encode({"person_id": str(own)}).decode(), corpus.matcher.model.method,
    )  # fmt: skip
    if decision is None:  # the pair has a decision already, not one awaiting review
        return None
    xid = await conn.fetchval(Q.set_person_member, report_id, org_id, person, decision)
    _file(corpus, subject, record, xid)  # the same record: the index learns the new xid only
    return person


async def _apply_link(
    conn: Conn, org_id: uuid.UUID, job: str, subject: str, candidate: str, decision_id: uuid.UUID
) -> dict[str, Any]:
    """Make the link a decision proposes; returns what it replaced."""
    if job == "incident":
        report = uuid.UUID(subject)
        before = await _incident_for(conn, org_id, report)
        target = await _incident_for(conn, org_id, uuid.UUID(candidate))
        await conn.execute(Q.set_incident_member, report, org_id, target, decision_id)
        await open_case_for_incident(conn, org_id=org_id, incident_id=target)
        return {"incident_id": str(before)}
    if job == "person":
        report = uuid.UUID(subject)
        before = await conn.fetchval(Q.person_of_report, report)
        if before is None:
            before = await conn.fetchval(Q.insert_person, org_id)
            await conn.execute(Q.set_person_member, report, org_id, before, None)
        target = await conn.fetchval(Q.person_of_report, uuid.UUID(candidate))
        if target is None:
            target = await conn.fetchval(Q.insert_person, org_id)
            await conn.execute(Q.set_person_member, uuid.UUID(candidate), org_id, target, None)
        await conn.execute(Q.set_person_member, report, org_id, target, decision_id)
        return {"person_id": str(before)}
    report_id, role = subject.split(":")
    before_entity = await conn.fetchval(Q.entity_link_of, uuid.UUID(report_id), role)
    await conn.execute(
        Q.set_entity_link, uuid.UUID(report_id), role, org_id, uuid.UUID(candidate), decision_id
    )
    return {"entity_id": str(before_entity) if before_entity else None}


async def _restore(
    conn: Conn, org_id: uuid.UUID, job: str, subject: str, previous: dict[str, Any]
) -> None:
    if job == "incident":
        report = uuid.UUID(subject)
        source = await conn.fetchval(Q.incident_of_report, report)
        back = uuid.UUID(previous["incident_id"])
        await conn.execute(Q.set_incident_member, report, org_id, back, None)
        if source is not None and source != back:
            # The report leaves the merged incident's case for its own incident's case again.
            await on_incident_split(
                conn, org_id=org_id, source_incident=source, new_incidents=[back]
            )
    elif job == "person" and "members" in previous:
        # A merge of two persons (`_merge_linked_persons`): the reports it moved that are still
        # where it put them go back, each with the decision it had; the subject stays.
        back, into = uuid.UUID(previous["person_id"]), uuid.UUID(previous["into"])
        for report_id, decision in previous["members"].items():
            await conn.execute(
                Q.move_person_member, org_id, uuid.UUID(report_id), back,
                uuid.UUID(decision) if decision else None, into,
            )  # fmt: skip
    elif job == "person":
        await conn.execute(
            Q.set_person_member, uuid.UUID(subject), org_id, uuid.UUID(previous["person_id"]), None
        )
        # The persons the report's arrival merged were merged because of it: they part again
        # (the matcher's own undo, not a label: nobody judged those pairs).
        for merge in await conn.fetch(Q.matcher_merges_by, org_id, subject):
            await _restore(conn, org_id, job, subject, msgspec.json.decode(merge["previous"]))
            undone = (org_id, merge["id"], "undone", "matcher", None)
            await conn.execute(Q.set_decision_status, *undone)
    else:
        report_id, role = subject.split(":")
        if previous.get("entity_id"):
            await conn.execute(
                Q.set_entity_link, uuid.UUID(report_id), role, org_id,
                uuid.UUID(previous["entity_id"]), None,
            )  # fmt: skip
        else:
            await conn.execute(Q.delete_entity_link, uuid.UUID(report_id), role)


async def decide(
    conn: Conn, org_id: uuid.UUID, decision_id: uuid.UUID, *, accept: bool, user_id: uuid.UUID
) -> str:
    """A case manager accepts (links) or rejects a suggestion in the review queue."""
    async with conn.transaction():
        row = await conn.fetchrow(Q.lock_decision, org_id, decision_id)
        if row is None:
            raise NotFound("decision", decision_id)
        if row["status"] != "pending_review":
            raise DecisionConflict(f"the decision is {row['status']}, not awaiting review")
        previous = None
        if accept:
            previous = await _apply_link(
                conn, org_id, row["job"], row["subject_id"], row["candidate_id"], decision_id
            )
        status = "accepted" if accept else "rejected"
        await conn.execute(
            Q.set_decision_status, org_id, decision_id, status, f"staff:{user_id}",
            _ENCODER.encode(previous).decode() if previous else None,
        )  # fmt: skip
    return status


async def undo_decision(
    conn: Conn, org_id: uuid.UUID, decision_id: uuid.UUID, *, user_id: uuid.UUID
) -> None:
    """Unmerge: put back exactly what the link replaced; kept as a "not a match" label."""
    async with conn.transaction():
        row = await conn.fetchrow(Q.lock_decision, org_id, decision_id)
        if row is None:
            raise NotFound("decision", decision_id)
        if row["status"] not in ("auto_linked", "accepted") or row["previous"] is None:
            raise DecisionConflict(f"the decision is {row['status']}; only links can be undone")
        await _restore(
            conn, org_id, row["job"], row["subject_id"], msgspec.json.decode(row["previous"])
        )
        await conn.execute(
            Q.set_decision_status, org_id, decision_id, "undone", f"staff:{user_id}", None
        )


async def refit_model(
    conn: Conn, keyring: Keyring, cache: MatchingCache, org_id: uuid.UUID, job: Job
) -> str:
    """Fit the org's model for a job and store it; returns how it was fitted.

    With enough human decisions the model is refitted from them (accepted = match; rejected or
    undone = not a match); otherwise EM runs on the org's own candidate pairs (for entity
    resolution: its report mentions against the registry).
    """
    if job == "entity":
        outcome = await _refit_entities(conn, cache, org_id)
    else:
        outcome = await _refit_dedup(conn, keyring, cache, org_id, job)
    await conn.execute(Q.record_refit_attempt, org_id, job, outcome)
    return outcome


async def _refit_dedup(
    conn: Conn, keyring: Keyring, cache: MatchingCache, org_id: uuid.UUID, job: Job
) -> str:
    corpus = await cache.corpus(conn, org_id, job)
    if job == "incident":
        await _refresh_incidents(conn, org_id, corpus)
    else:
        await _refresh_persons(conn, keyring, org_id, corpus)
    labelled = [
        (
            corpus.records[r["subject_id"]],
            corpus.records[r["candidate_id"]],
            r["status"] == "accepted",
        )
        for r in await conn.fetch(Q.match_labels, org_id, job)
        if r["subject_id"] in corpus.records and r["candidate_id"] in corpus.records
    ]
    answers = {label for _, _, label in labelled}
    if len(labelled) >= MIN_LABELS and answers == {True, False}:
        fitted = corpus.unpinned.refit_from_labels(labelled)
    elif len(corpus.records) >= MIN_RECORDS_FOR_EM and _has_candidate_pairs(
        corpus, corpus.features.values()
    ):
        fitted = corpus.unpinned.fit(list(corpus.records.values()))
    else:
        return "unchanged: not enough reports or decisions yet"
    # Auto-link and merge where the fitted model expects the best F1 over the org's own records.
    fitted, _ = dedup_thresholds_for_f1(fitted, fitted.score_batch(list(corpus.records.values())))
    await conn.execute(Q.put_match_model, org_id, job, _ENCODER.encode(fitted.model).decode())
    cache.forget(org_id)
    return fitted.model.method


async def _refit_entities(conn: Conn, cache: MatchingCache, org_id: uuid.UUID) -> str:
    """Entity resolution: the org's report mentions against its registry (its own entities and
    the shared ones). Human decisions on the entity queue are the labels: an accepted link says
    which entity a mention names, and so that its other candidates are not it; a mention whose
    suggestions were all rejected (or whose link was undone) names none of them.
    """
    corpus = await cache.corpus(conn, org_id, "entity")
    await _refresh_entities(conn, org_id, corpus)
    registry = list(corpus.records.values())
    mentions = [
        record for row in await conn.fetch(Q.entity_mentions, org_id) for record in _mentions(row)
    ]
    decided = await conn.fetch(Q.match_labels, org_id, "entity")
    accepted = {(r["subject_id"], r["candidate_id"]) for r in decided if r["status"] == "accepted"}
    answers = {r["status"] == "accepted" for r in decided}
    subjects = {r["subject_id"] for r in decided}
    labelled = [m for m in mentions if m.id in subjects]
    if len(decided) >= MIN_LABELS and answers == {True, False} and labelled:
        fitted = corpus.unpinned.fit(
            labelled, against=registry, same=lambda mention, entity: (mention, entity) in accepted
        )
    elif len(mentions) >= MIN_RECORDS_FOR_EM and _has_candidate_pairs(
        corpus, (corpus.matcher.job.prepare(m) for m in mentions)
    ):
        fitted = corpus.unpinned.fit(mentions, against=registry)
    else:
        return "unchanged: not enough report mentions of employers or recruiters yet"
    # Auto-link only where the fitted model expects its links over the org's own mentions to
    # be right at least LINK_PRECISION of the time.
    fitted = with_link_threshold_for_precision(fitted, registry, mentions)
    await conn.execute(Q.put_match_model, org_id, "entity", _ENCODER.encode(fitted.model).decode())
    cache.forget(org_id)
    return fitted.model.method


def _mentions(row: Any) -> list[EntityRecord]:
    found = []
    for role, country in (("employer", "destination_country"), ("recruiter", "origin_country")):
        party = _party(row[role])
        if party is not None and party.entity_id is None:
            record = mention_record(row["id"], role, party, row[country])
            if record is not None:
                found.append(record)
    return found


def _has_candidate_pairs(corpus: _Corpus, features: Iterable[Any]) -> bool:
    """EM needs pairs to learn from; blocking may give none in a small or spread-out org (for
    entities: mentions that share no blocking key with the registry)."""
    return any(any(True for _ in corpus.index.candidates(f)) for f in features)
