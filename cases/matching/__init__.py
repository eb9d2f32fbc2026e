"""The matching engine: incident dedup, entity resolution and person dedup with one explainable
Fellegi-Sunter model per job (see docs/decisions/0102-matching-model.md)."""

from cases.matching.engine import FieldContribution, Matcher, MatchExplanation, ScoredCandidate
from cases.matching.jobs import JobSpec, entity_job, incident_job, person_job
from cases.matching.model import FrequencyTable, MatchModel, Thresholds
from cases.matching.records import EntityRecord, IncidentRecord, PersonRecord

__all__ = [
    "EntityRecord",
    "FieldContribution",
    "FrequencyTable",
    "IncidentRecord",
    "JobSpec",
    "MatchExplanation",
    "MatchModel",
    "Matcher",
    "PersonRecord",
    "ScoredCandidate",
    "Thresholds",
    "entity_job",
    "incident_job",
    "person_job",
]
