"""Risk detection statistics: the prospective space-time permutation scan over places and the
surge scan over the employer/recruiter tree, both with Monte Carlo p-values."""

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
    "scan_entity_surge",
    "scan_space_time",
]
