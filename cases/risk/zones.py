"""Candidate zones of the circular space-time scan: for every location, the nested circles of its
nearest neighbours, limited by radius and by the share of all cases they may hold.

Distances follow SaTScan for latitude/longitude input: points are placed on a sphere of radius
6367 km and compared by straight-line (chord) distance. Chord and great-circle distance order
neighbours identically; at 3 km the two differ by about one part in 10^7.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy.spatial import cKDTree

__all__ = ["EARTH_RADIUS_KM", "CandidateZones", "build_zones", "sphere_points"]

EARTH_RADIUS_KM = 6367.0
"""The radius SaTScan uses when converting latitude/longitude to Cartesian coordinates."""


class CandidateZones:
    """Neighbour lists in distance order, with the positions where a candidate circle ends.

    For centre ``i`` the neighbours are ``order[ptr[i]:ptr[i + 1]]`` (the centre first). Position
    ``p`` in that slice ends a zone when ``zone_end[p]`` is 1; the zone is every neighbour up to
    and including ``p``. Locations at exactly the same distance enter a circle together, so a
    zone never ends inside a tie. ``unique_end`` is ``zone_end`` with zones whose member set
    already appeared under an earlier centre switched off: the Monte Carlo maximum does not
    change, and the replicas evaluate fewer zones.
    """

    __slots__ = ("distance_km", "order", "ptr", "unique_end", "zone_cases", "zone_end")

    def __init__(
        self,
        ptr: NDArray[np.int64],
        order: NDArray[np.int64],
        distance_km: NDArray[np.float64],
        zone_end: NDArray[np.int8],
        unique_end: NDArray[np.int8],
        zone_cases: NDArray[np.float64],
    ) -> None:
        self.ptr = ptr
        self.order = order
        self.distance_km = distance_km
        self.zone_end = zone_end
        self.unique_end = unique_end
        self.zone_cases = zone_cases

    @property
    def zone_count(self) -> int:
        return int(self.zone_end.sum())

    @property
    def unique_zone_count(self) -> int:
        return int(self.unique_end.sum())

    def members(self, centre: int, end: int) -> NDArray[np.int64]:
        """Locations of the zone of ``centre`` that ends at absolute position ``end``."""
        return self.order[self.ptr[centre] : end + 1]


def sphere_points(
    latitude: NDArray[np.float64], longitude: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Cartesian coordinates (km) of latitude/longitude degrees on SaTScan's sphere."""
    lat = np.radians(latitude)
    lon = np.radians(longitude)
    return np.column_stack(
        (
            EARTH_RADIUS_KM * np.cos(lon) * np.cos(lat),
            EARTH_RADIUS_KM * np.sin(lon) * np.cos(lat),
            EARTH_RADIUS_KM * np.sin(lat),
        )
    )


def build_zones(
    locations: NDArray[np.float64],
    location_cases: NDArray[np.float64],
    max_radius_km: float,
    max_case_fraction: float,
    max_neighbours: int | None = None,
) -> CandidateZones:
    """Candidate circles around every location (``locations`` is an (n, 2) array of lat, lon).

    ``max_neighbours`` (K) limits a circle to the K nearest locations, centre included; a group
    of locations at the same distance is never split, so a circle may stop short of K.
    """
    points = sphere_points(locations[:, 0], locations[:, 1])
    total = float(location_cases.sum())
    case_cap = max_case_fraction * total
    tree = cKDTree(points)
    # A hair of slack so that a neighbour exactly at the maximum radius is not lost to rounding
    # inside the tree; the exact test against the radius happens below.
    near = tree.query_ball_point(points, r=max_radius_km * (1 + 1e-12) + 1e-12)
    ptr = np.zeros(len(points) + 1, dtype=np.int64)
    orders: list[NDArray[np.int64]] = []
    dists: list[NDArray[np.float64]] = []
    ends: list[NDArray[np.int8]] = []
    cum_cases: list[NDArray[np.float64]] = []
    for centre, neighbours in enumerate(near):
        idx = np.asarray(neighbours, dtype=np.int64)
        dist = np.sqrt(((points[idx] - points[centre]) ** 2).sum(axis=1))
        dist[idx == centre] = 0.0
        rank = np.lexsort((idx, dist))
        idx, dist = idx[rank], dist[rank]
        keep = dist <= max_radius_km
        idx, dist = idx[keep], dist[keep]
        cases = np.cumsum(location_cases[idx])
        # A zone may end only where the next neighbour is strictly farther (ties enter together),
        # and zones are nested, so the first zone over the case cap ends the list.
        end = np.ones(len(idx), dtype=np.int8)
        end[:-1] = dist[1:] > dist[:-1]
        if max_neighbours is not None and len(idx) > max_neighbours:
            boundaries = np.nonzero(end[:max_neighbours] == 1)[0]
            k = int(boundaries[-1]) + 1 if len(boundaries) else 1
            idx, dist, cases, end = idx[:k], dist[:k], cases[:k], end[:k]
            end[-1] = 1
        over = np.nonzero((cases > case_cap) & (end == 1))[0]
        if len(over):
            cut = int(over[0])
            idx, dist, cases, end = idx[:cut], dist[:cut], cases[:cut], end[:cut]
        orders.append(idx)
        dists.append(dist)
        ends.append(end)
        cum_cases.append(cases)
        ptr[centre + 1] = ptr[centre] + len(idx)
    order = np.concatenate(orders) if orders else np.zeros(0, dtype=np.int64)
    zone_end = np.concatenate(ends) if ends else np.zeros(0, dtype=np.int8)
    return CandidateZones(
        ptr=ptr,
        order=order,
        distance_km=np.concatenate(dists) if dists else np.zeros(0),
        zone_end=zone_end,
        unique_end=_first_occurrences(ptr, order, zone_end),
        zone_cases=np.concatenate(cum_cases) if cum_cases else np.zeros(0),
    )


def _first_occurrences(
    ptr: NDArray[np.int64], order: NDArray[np.int64], zone_end: NDArray[np.int8]
) -> NDArray[np.int8]:
    # A member set is identified by two independent 64-bit sums of random keys (a collision has
    # probability around 2^-128 per pair); sums are order-free, as a set must be.
    rng = np.random.default_rng(0x5EED)
    n_loc = len(ptr) - 1
    keys = rng.integers(0, 2**63, size=(2, max(n_loc, 1)), dtype=np.uint64)
    unique = zone_end.copy()
    if len(order) == 0:
        return unique
    sums = np.empty((2, len(order)), dtype=np.uint64)
    for row in range(2):
        member_keys = keys[row][order]
        running = np.cumsum(member_keys, dtype=np.uint64)
        start = np.repeat(ptr[:-1], np.diff(ptr))
        before = np.where(start > 0, running[np.maximum(start - 1, 0)], np.uint64(0))
        sums[row] = running - before
    ends = np.nonzero(zone_end)[0]
    pairs = np.stack((sums[0][ends], sums[1][ends]), axis=1)
    _, first = np.unique(pairs, axis=0, return_index=True)
    unique[:] = 0
    unique[ends[first]] = 1
    return unique
