"""Risk detection statistics: the prospective space-time permutation scan over places and the
surge scan over the employer/recruiter tree, both with Monte Carlo p-values, and the family-wise
adjustment across the scans of one run."""

from cases.risk.family import family_p_value, family_replicas, recurrence_interval
from cases.risk.records import CaseCounts
from cases.risk.spacetime import ScanResult, SpaceTimeCluster, SpaceTimeParams, scan_space_time
from cases.risk.surge import EntitySurge, SurgeParams, SurgeResult, scan_entity_surge

__all__ = [
    "CaseCounts",
    "EntitySurge",
    "ScanResult",
    "SpaceTimeCluster",
    "SpaceTimeParams",
    "SurgeParams",
    "SurgeResult",
    "family_p_value",
    "family_replicas",
    "recurrence_interval",
    "scan_entity_surge",
    "scan_space_time",
]
