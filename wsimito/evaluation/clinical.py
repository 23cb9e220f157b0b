"""Clinical numbers from detected mitoses: density per mm², the hotspot, the Nottingham mitotic score.

Pathologists count mitoses in the ten high-power fields (HPF) of the most active area; a field's
size depends on the microscope, which is why the Nottingham cut-offs come as a table by field
diameter. On a slide the same idea is exact: the *hotspot* is the window of a fixed area (default
2 mm², about ten 0.5 mm fields) holding the most detections, found here exactly rather than on a
grid, and its count is rescaled to ten fields of the chosen diameter before the table is applied.

Conventions:

- Points and windows are level-0 pixels; areas are converted with the slide's mpp (µm/px).
- Windows are closed (a point on the edge is inside) and axis-aligned (squares).
- By default a window may extend past the slide and over non-tissue; pass ``bounds`` (e.g. the
  slide's ``(0, 0, width, height)`` or the tissue's bounding box) to keep it inside a rectangle.
  The search does not follow the tissue outline: give ``tissue_mm2`` and a slide whose tissue is
  smaller than the hotspot area is flagged (``fits=False`` and a reason), as is a ``bounds``
  rectangle too small for the window (then the window is searched without bounds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from wsimito.errors import WsimitoError

HOTSPOT_SHAPES = ("square", "circle")
_TOL = 1e-9  # relative, for points exactly on a circle's edge

# Nottingham mitotic score cut-offs by microscope field diameter, for a count in 10 fields:
# (field diameter mm, highest count scoring 1, lowest count scoring 3); counts in between score 2.
# Source: Elston CW, Ellis IO. Pathological prognostic factors in breast cancer. I. The value of
# histological grade in breast cancer. Histopathology 1991;19:403-410, as tabulated in NHS Breast
# Screening Programme Publication No 58, "Pathology reporting of breast disease" (2005, with the
# Royal College of Pathologists' minimum dataset) and the CAP invasive breast carcinoma protocol.
# The rows scale Elston & Ellis' cut-offs for a 0.274 mm² field (0-9 / 10-19 / >=20) with the
# field area (pi d² / 4, rounded to 0.001 mm²); tests/test_clinical.py checks every row by that rule.
NOTTINGHAM_CUTOFFS = (
    (0.40, 4, 10), (0.41, 4, 10), (0.42, 5, 11), (0.43, 5, 11), (0.44, 5, 12),
    (0.45, 5, 12), (0.46, 6, 13), (0.47, 6, 13), (0.48, 6, 14), (0.49, 6, 14),
    (0.50, 7, 15), (0.51, 7, 15), (0.52, 7, 16), (0.53, 8, 17), (0.54, 8, 17),
    (0.55, 8, 18), (0.56, 8, 18), (0.57, 9, 19), (0.58, 9, 20), (0.59, 9, 20),
    (0.60, 10, 21), (0.61, 10, 22), (0.62, 11, 23), (0.63, 11, 23), (0.64, 11, 24),
    (0.65, 12, 25), (0.66, 12, 25), (0.67, 12, 26), (0.68, 13, 27), (0.69, 13, 28),
)


def mitoses_per_mm2(count: float, area_mm2: float) -> float:
    """Density; nan for a zero area (no tissue: no density, rather than infinity)."""
    return count / area_mm2 if area_mm2 > 0 else math.nan


# --- hotspot ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hotspot:
    """The window of a given area holding the most points.

    ``window`` is ``(x0, y0, x1, y1)`` for a square and ``(cx, cy, radius)`` for a circle, level-0
    pixels. ``fits`` is False (and ``reason`` says why) when the tissue or the bounds are smaller
    than the window, so its count covers less tumour than the area promises.
    """

    count: int
    shape: str
    area_mm2: float
    centre: tuple[float, float]
    window: tuple[float, ...]
    fits: bool = True
    reason: str = ""

    @property
    def per_mm2(self) -> float:
        return mitoses_per_mm2(self.count, self.area_mm2)


def find_hotspot(points, mpp: float, *, area_mm2: float = 2.0, shape: str = "square", bounds=None,
                 tissue_mm2: float | None = None) -> Hotspot:
    """The ``shape`` window of ``area_mm2`` containing the most ``points`` ((N, 2) level-0 (x, y)).

    Exact: a square's best position can be slid right and down until a point sits on its left and
    one on its top edge (or it meets ``bounds``), so only those positions are tried; a best circle
    can be moved until two points sit on its edge or it is centred on a point (or meets the
    bounds), and those centres are found with an angular sweep around each point.
    O(n k log k) for n points with k neighbours within a window's width.
    """
    if shape not in HOTSPOT_SHAPES:
        raise WsimitoError(f"hotspot shape must be one of {', '.join(HOTSPOT_SHAPES)}, got {shape!r}")
    if not mpp or mpp <= 0 or area_mm2 <= 0:
        raise WsimitoError(f"hotspot needs a positive mpp and area, got mpp {mpp}, area {area_mm2} mm²")
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    area_px = area_mm2 * 1e6 / mpp**2
    size = math.sqrt(area_px) if shape == "square" else math.sqrt(area_px / math.pi)  # side or radius
    reasons = []
    if tissue_mm2 is not None and tissue_mm2 < area_mm2:
        reasons.append(f"tissue area {tissue_mm2:.3g} mm² is smaller than the {area_mm2:g} mm² hotspot; "
                       "its count covers less tissue than that area")
    if bounds is not None:
        bx0, by0, bx1, by1 = map(float, bounds)
        span = size if shape == "square" else 2 * size
        if bx1 - bx0 < span or by1 - by0 < span:
            reasons.append(f"the bounds ({(bx1 - bx0) * mpp / 1000:.3g} x {(by1 - by0) * mpp / 1000:.3g} mm) "
                           f"cannot hold the {area_mm2:g} mm² {shape}; searched without them")
            bounds = None
    if shape == "square":
        count, (x0, y0) = _best_square(points, size, bounds)
        centre, window = (x0 + size / 2, y0 + size / 2), (x0, y0, x0 + size, y0 + size)
    else:
        count, centre = _best_circle(points, size, bounds)
        window = (centre[0], centre[1], size)
    return Hotspot(count, shape, area_mm2, (float(centre[0]), float(centre[1])),
                   tuple(float(v) for v in window), not reasons, "; ".join(reasons))


def _best_square(points: np.ndarray, side: float, bounds) -> tuple[int, tuple[float, float]]:
    """Most points in a closed axis-aligned square of ``side`` and its top-left corner."""
    if bounds is None:
        lo_x = lo_y = -math.inf
        hi_x = hi_y = math.inf
    else:  # the top-left corner's range that keeps the square inside the bounds
        lo_x, lo_y, hi_x, hi_y = bounds[0], bounds[1], bounds[2] - side, bounds[3] - side
    if not len(points):
        return 0, ((0.0, 0.0) if bounds is None else (float(lo_x), float(lo_y)))
    order = np.argsort(points[:, 0], kind="stable")
    xs, ys = points[order, 0], points[order, 1]
    best, corner = -1, (0.0, 0.0)
    for x0 in _positions(xs, lo_x, hi_x):
        strip = np.sort(ys[np.searchsorted(xs, x0, "left"): np.searchsorted(xs, x0 + side, "right")])
        y_candidates = _positions(strip, lo_y, hi_y)
        if not len(y_candidates):
            continue
        counts = np.searchsorted(strip, y_candidates + side, "right") - np.searchsorted(strip, y_candidates, "left")
        i = int(np.argmax(counts))
        if counts[i] > best:
            best, corner = int(counts[i]), (float(x0), float(y_candidates[i]))
    return best, corner


def _positions(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Candidate edge positions: the points' coordinates and the far bound, all within [low, high]."""
    candidates = np.unique(np.append(values, high) if math.isfinite(high) else values)
    return candidates[(candidates >= low) & (candidates <= high)]


def _best_circle(points: np.ndarray, radius: float, bounds) -> tuple[int, tuple[float, float]]:
    """Most points in a closed disc of ``radius`` and its centre."""
    region = None  # where the centre may go: the bounds shrunk by the radius
    if bounds is not None:
        region = (bounds[0] + radius, bounds[1] + radius, bounds[2] - radius, bounds[3] - radius)
    if not len(points):
        return 0, ((0.0, 0.0) if region is None else (region[0], region[1]))
    from scipy.spatial import cKDTree

    tree = cKDTree(points)
    reach = radius * (1 + _TOL)
    candidates = [points if region is None else np.clip(points, region[:2], region[2:])]
    if region is not None:
        candidates.append(np.array([[region[0], region[1]], [region[2], region[1]],
                                    [region[0], region[3]], [region[2], region[3]]]))
    for i, neighbours in enumerate(tree.query_ball_point(points, 2 * reach)):
        centres = _edge_centres(points, i, np.array([j for j in neighbours if j != i], np.int64), radius, region)
        if len(centres):
            candidates.append(centres)
    candidates = np.concatenate(candidates)
    counts = np.array([len(n) for n in tree.query_ball_point(candidates, reach)])
    best = int(np.argmax(counts))
    return int(counts[best]), (float(candidates[best, 0]), float(candidates[best, 1]))


def _edge_centres(points, i, neighbours, radius, region) -> np.ndarray:
    """The best centre on the circle of ``radius`` around point ``i`` (so ``i`` is on the edge), as (0 or 1, 2).

    Neighbour j is inside a disc centred at angle phi iff |phi - theta_j| <= alpha_j, an arc; an
    angular sweep over the arcs' starts finds the angle covering most arcs. With a region, the
    angles where the circle of centres crosses the region's edges are candidates too, and angles
    whose centre falls outside the region are dropped.
    """
    delta = points[neighbours] - points[i]
    distance = np.hypot(delta[:, 0], delta[:, 1])
    arcs = distance > radius * _TOL  # coincident points are inside at every angle: no arc
    theta = np.arctan2(delta[arcs, 1], delta[arcs, 0])
    alpha = np.arccos(np.minimum(1.0, distance[arcs] / (2 * radius))) + _TOL
    starts = np.mod(theta - alpha, 2 * np.pi)
    ends = np.sort(starts + 2 * alpha)
    starts = np.sort(starts)
    angles = starts if region is None else np.concatenate([starts, _crossings(points[i], radius, region)])
    centres = points[i] + radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    if region is not None:
        slack = _TOL * max(1.0, *map(abs, region))
        inside = ((centres[:, 0] >= region[0] - slack) & (centres[:, 0] <= region[2] + slack)
                  & (centres[:, 1] >= region[1] - slack) & (centres[:, 1] <= region[3] + slack))
        centres, angles = np.clip(centres[inside], region[:2], region[2:]), angles[inside]
    if not len(angles):
        return np.zeros((0, 2))
    cover = (np.searchsorted(starts, angles, "right") - np.searchsorted(ends, angles, "left")
             + len(ends) - np.searchsorted(ends, angles + 2 * np.pi, "left"))
    return centres[[int(np.argmax(cover))]]


def _crossings(centre, radius, region) -> np.ndarray:
    """Angles in [0, 2 pi) where the circle of ``radius`` around ``centre`` meets the region's edges."""
    angles = []
    for edge in (region[0], region[2]):
        c = (edge - centre[0]) / radius
        if abs(c) <= 1:
            angles += [math.acos(c), -math.acos(c)]
    for edge in (region[1], region[3]):
        s = (edge - centre[1]) / radius
        if abs(s) <= 1:
            angles += [math.asin(s), math.pi - math.asin(s)]
    return np.mod(np.array(angles, dtype=np.float64), 2 * np.pi)


# --- high-power fields and the Nottingham score -------------------------------------------------


def count_per_10_hpf(count: float, area_mm2: float, field_diameter_mm: float) -> float:
    """``count`` in ``area_mm2`` rescaled to ten circular fields of ``field_diameter_mm``."""
    if area_mm2 <= 0 or field_diameter_mm <= 0:
        raise WsimitoError(f"need a positive area and field diameter, got {area_mm2} mm², {field_diameter_mm} mm")
    return count * 10 * math.pi * (field_diameter_mm / 2) ** 2 / area_mm2


def nottingham_cutoffs(field_diameter_mm: float) -> tuple[float, int, int]:
    """The table row nearest ``field_diameter_mm``: (its diameter, highest count scoring 1, lowest scoring 3).

    Rows are 0.01 mm apart, so the nearest row is within 0.005 mm (about 2% of the field area);
    diameters outside the table (0.40-0.69 mm) are an error rather than an extrapolation.
    """
    low, high = NOTTINGHAM_CUTOFFS[0][0], NOTTINGHAM_CUTOFFS[-1][0]
    if not low - 0.005 <= field_diameter_mm < high + 0.005:
        raise WsimitoError(f"field diameter {field_diameter_mm} mm is outside the Nottingham table ({low}-{high} mm)")
    return min(NOTTINGHAM_CUTOFFS, key=lambda row: (abs(row[0] - field_diameter_mm), row[0]))


def mitotic_score(count_10_hpf: float, field_diameter_mm: float) -> int:
    """Nottingham mitotic score 1, 2 or 3 for a count in ten fields of ``field_diameter_mm``.

    A rescaled count is rounded to a whole number of mitoses (halves up) first, as a pathologist's
    count would be, so 7.4 per 10 fields scores like 7 and 7.5 like 8.
    """
    _, max_score1, min_score3 = nottingham_cutoffs(field_diameter_mm)
    count = math.floor(count_10_hpf + 0.5)
    return 1 if count <= max_score1 else 3 if count >= min_score3 else 2


def slide_summary(points, mpp: float, *, tissue_mm2: float | None, area_mm2: float = 2.0,
                  shape: str = "square", field_diameter_mm: float = 0.5, bounds=None) -> dict:
    """The clinical numbers of one slide as a flat dict of plain values (a counts.csv row's worth)."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    hotspot = find_hotspot(points, mpp, area_mm2=area_mm2, shape=shape, bounds=bounds, tissue_mm2=tissue_mm2)
    per_10 = count_per_10_hpf(hotspot.count, area_mm2, field_diameter_mm)
    return {
        "mitoses": len(points),
        "tissue_mm2": tissue_mm2,
        "mitoses_per_mm2": mitoses_per_mm2(len(points), tissue_mm2) if tissue_mm2 is not None else math.nan,
        "hotspot_shape": shape,
        "hotspot_mm2": area_mm2,
        "hotspot_count": hotspot.count,
        "hotspot_per_mm2": hotspot.per_mm2,
        "hotspot_x": hotspot.centre[0],
        "hotspot_y": hotspot.centre[1],
        "hotspot_fits": hotspot.fits,
        "hotspot_note": hotspot.reason,
        "field_diameter_mm": field_diameter_mm,
        "mitoses_per_10_hpf": per_10,
        "mitotic_score": mitotic_score(per_10, field_diameter_mm),
    }
