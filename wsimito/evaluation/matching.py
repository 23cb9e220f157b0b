"""Detections matched one-to-one to truth points within a radius in micrometres, and P/R/F1.

The one place the matching rules and the counting conventions live; the threshold sweep
(:mod:`wsimito.evaluation.sweeps`) re-uses the pieces below rather than repeating them.

A mitosis is about 10 µm across whatever the scanner, so the radius is physical and each image's
radius in pixels is ``radius_um / mpp`` with that image's own mpp; a pixel radius would mean
different things at 0.23 and 0.5 µm/px.

Conventions (the same for every function here and in the sweep):

- A detection and a truth point can match when their distance is <= the radius: points exactly on
  the radius match, in both rules. A relative tolerance of 1e-9 keeps float rounding of the µm to
  px conversion from deciding such boundary cases.
- Matching is one-to-one. ``hungarian`` (default) takes the largest possible number of matches and,
  among those, the smallest total distance. ``greedy`` is the MIDOG rule (comic/evalutils
  ``score_detection``): each truth point, in input order, takes the nearest detection within the
  radius that no earlier truth point took (equal distances: the earlier detection). Greedy can
  miss matches Hungarian finds; it is there to reproduce challenge numbers.
- A detection counts when its score is >= the threshold (no threshold: all count).
- precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2 TP / (2 TP + FP + FN); each is nan
  when its denominator is 0. So an image with no detections has precision nan, one without truth
  recall nan, one with neither F1 nan; truth but no detections gives F1 = 0.
- Pooled numbers sum TP, FP and FN over the images first (a micro-average), so images with few
  mitoses weigh by their counts, and nan per-image ratios never poison the pool.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from wsimito.errors import WsimitoError

MATCH_RULES = ("hungarian", "greedy")
_RADIUS_TOLERANCE = 1e-9


class Detections(NamedTuple):
    """Detections on one image: (N, 2) float (x, y) level-0 pixels and (N,) scores."""

    points: np.ndarray
    scores: np.ndarray


@dataclass(frozen=True)
class Counts:
    """True positives, false positives and false negatives; ratios follow the module's conventions."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    def as_dict(self) -> dict:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn,
                "precision": self.precision, "recall": self.recall, "f1": self.f1}


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


# --- matching -----------------------------------------------------------------------------------


def match_points(detections, truth, radius_px: float, rule: str = "hungarian") -> np.ndarray:
    """Matched pairs as a (K, 2) int array of (detection index, truth index), sorted by truth index.

    ``detections`` and ``truth`` are (N, 2) arrays of (x, y) in the same pixel frame.
    """
    detections, truth = _as_points(detections, "detections"), _as_points(truth, "truth")
    _check_rule(rule)
    if radius_px < 0:
        raise WsimitoError(f"the matching radius must not be negative, got {radius_px}")
    pairs, distances = candidate_pairs(detections, truth, radius_px)
    matched = []
    for keep in components(pairs, len(detections), len(truth)):
        matched.append(match_component(pairs[keep], distances[keep], rule, radius_px))
    if not matched:
        return np.zeros((0, 2), np.int64)
    result = np.concatenate(matched)
    return result[np.argsort(result[:, 1], kind="stable")]


def count_matches(detections, truth, radius_px: float, rule: str = "hungarian") -> Counts:
    """TP, FP, FN of ``detections`` against ``truth`` at a radius in pixels."""
    detections, truth = _as_points(detections, "detections"), _as_points(truth, "truth")
    tp = len(match_points(detections, truth, radius_px, rule))
    return Counts(tp, len(detections) - tp, len(truth) - tp)


def evaluate_image(detections, truth, *, mpp: float, radius_um: float = 8.0, rule: str = "hungarian",
                   scores=None, threshold: float | None = None) -> Counts:
    """TP, FP, FN on one image, the radius in µm converted with this image's ``mpp`` (µm/px)."""
    detections = _as_points(detections, "detections")
    if threshold is not None:
        detections = detections[_scores(scores, len(detections)) >= threshold]
    return count_matches(detections, truth, _radius_px(radius_um, mpp), rule)


def _as_points(points, what: str) -> np.ndarray:
    array = np.asarray(points, dtype=np.float64)
    if array.size == 0:
        return np.zeros((0, 2))
    if array.ndim != 2 or array.shape[1] != 2:
        raise WsimitoError(f"{what} must be an (N, 2) array of (x, y), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise WsimitoError(f"{what} contain nan or infinite coordinates")
    return array


def _scores(scores, count: int) -> np.ndarray:
    if scores is None:
        raise WsimitoError("detections need scores (one per point) to apply a threshold")
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(scores) != count:
        raise WsimitoError(f"{len(scores)} scores for {count} detections")
    if np.isnan(scores).any():
        raise WsimitoError("detection scores contain nan")
    return scores


def _check_rule(rule: str) -> None:
    if rule not in MATCH_RULES:
        raise WsimitoError(f"unknown matching rule {rule!r} (known: {', '.join(MATCH_RULES)})")


def _radius_px(radius_um: float, mpp: float) -> float:
    if not mpp or mpp <= 0 or not math.isfinite(mpp):
        raise WsimitoError(f"mpp must be a positive number of µm per pixel, got {mpp}")
    if radius_um < 0:
        raise WsimitoError(f"the matching radius must not be negative, got {radius_um} µm")
    return radius_um / mpp


def candidate_pairs(detections: np.ndarray, truth: np.ndarray, radius_px: float):
    """Every (detection, truth) pair within the radius (inclusive) and its distance."""
    from scipy.spatial import cKDTree

    if not len(detections) or not len(truth):
        return np.zeros((0, 2), np.int64), np.zeros(0)
    limit = radius_px * (1 + _RADIUS_TOLERANCE)
    near = cKDTree(detections).query_ball_point(truth, limit * (1 + 1e-6) + 1e-9)
    truth_index = np.repeat(np.arange(len(truth)), [len(n) for n in near])
    det_index = np.fromiter((d for n in near for d in n), np.int64, count=len(truth_index))
    distances = np.hypot(*(detections[det_index] - truth[truth_index]).T)
    within = distances <= limit
    return np.stack([det_index[within], truth_index[within]], axis=1), distances[within]


def components(pairs: np.ndarray, n_detections: int, n_truth: int) -> list[np.ndarray]:
    """Pair indices grouped by connected component of the detection-truth graph.

    Components never interact in either rule, so matching them one by one is exact and keeps
    the Hungarian cost matrices small however many points an image has.
    """
    if not len(pairs):
        return []
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    nodes = n_detections + n_truth
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], n_detections + pairs[:, 1])), shape=(nodes, nodes))
    _, labels = connected_components(graph, directed=False)
    label = labels[pairs[:, 0]]
    order = np.argsort(label, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(label[order])) + 1)


def match_component(pairs: np.ndarray, distances: np.ndarray, rule: str, radius_px: float) -> np.ndarray:
    """Matched (detection, truth) pairs among the candidate ``pairs`` of one component."""
    if rule == "greedy":
        # truth points in order; each takes its nearest free detection (equal distances: lower index)
        taken, matched = set(), []
        for p in np.lexsort((pairs[:, 0], distances, pairs[:, 1])):
            det, tru = pairs[p]
            if det in taken or (matched and matched[-1][1] == tru):
                continue
            taken.add(det)
            matched.append((det, tru))
        return np.array(matched, np.int64).reshape(-1, 2)
    from scipy.optimize import linear_sum_assignment

    # Hungarian: pairs within the radius cost distance - big, the others 0 and are dropped after.
    # big exceeds any matching's total distance, so one more match always outweighs distance:
    # the optimum has the most matches and, among those, the least total distance.
    dets, det_local = np.unique(pairs[:, 0], return_inverse=True)
    truths, truth_local = np.unique(pairs[:, 1], return_inverse=True)
    big = min(len(dets), len(truths)) * radius_px + 1.0
    cost = np.zeros((len(dets), len(truths)))
    cost[det_local, truth_local] = distances - big
    rows, cols = linear_sum_assignment(cost)
    real = cost[rows, cols] < 0
    return np.stack([dets[rows[real]], truths[cols[real]]], axis=1)


# --- several images -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageResult:
    """One image's counts, with what went into them."""

    image: str
    mpp: float
    n_truth: int
    n_detections: int  # after the threshold
    counts: Counts

    def as_dict(self) -> dict:
        return {"image": self.image, "mpp": self.mpp, "n_truth": self.n_truth,
                "n_detections": self.n_detections, **self.counts.as_dict()}


@dataclass(frozen=True)
class Evaluation:
    """Per-image results and their pool (counts summed over images)."""

    per_image: tuple[ImageResult, ...]
    radius_um: float
    rule: str
    threshold: float | None

    @property
    def pooled(self) -> Counts:
        return sum((r.counts for r in self.per_image), Counts())

    def as_dict(self) -> dict:
        """Plain JSON types; nan ratios become None."""
        return _json_safe({**self.pooled.as_dict(), "radius_um": self.radius_um, "match": self.rule,
                           "threshold": self.threshold, "per_image": [r.as_dict() for r in self.per_image]})


def evaluate(detections: dict, truth: dict, mpp, *, images=None, radius_um: float = 8.0,
             rule: str = "hungarian", threshold: float | None = None) -> Evaluation:
    """Match ``detections`` ``{image: Detections}`` to ``truth`` ``{image: (N, 2) points}``, image by image.

    ``mpp`` is one number for all images or ``{image: mpp}``. ``images`` are the images to score
    (default: every image in either mapping); an image missing from a mapping has no points there.
    """
    per_image = []
    for item in image_inputs(detections, truth, mpp, images=images, radius_um=radius_um, rule=rule,
                             threshold=threshold):
        counts = count_matches(item.points, item.truth, item.radius_px, rule)
        per_image.append(ImageResult(item.image, item.mpp, len(item.truth), len(item.points), counts))
    return Evaluation(tuple(per_image), radius_um, rule, threshold)


class ImageInputs(NamedTuple):
    """One image's checked inputs: detections (score >= threshold), truth points, radius in pixels."""

    image: str
    mpp: float
    points: np.ndarray
    scores: np.ndarray
    truth: np.ndarray
    radius_px: float


def image_inputs(detections: dict, truth: dict, mpp, *, images=None, radius_um: float = 8.0,
                 rule: str = "hungarian", threshold: float | None = None) -> list[ImageInputs]:
    """The checked inputs of every image to score, with the arguments of :func:`evaluate`."""
    _check_rule(rule)
    inputs = []
    for image in _images(detections, truth, images):
        points, scores = _image_detections(detections, image, threshold)
        truth_points = _as_points(truth.get(image, ()), f"truth of {image}")
        image_mpp = _mpp_of(mpp, image)
        inputs.append(ImageInputs(image, image_mpp, points, scores, truth_points, _radius_px(radius_um, image_mpp)))
    return inputs


def _images(detections: dict, truth: dict, images) -> list[str]:
    return sorted(set(detections) | set(truth)) if images is None else list(images)


def _image_detections(detections: dict, image: str, threshold: float | None):
    found = detections.get(image)
    if found is None:
        return np.zeros((0, 2)), np.zeros(0)
    points = _as_points(found[0], f"detections of {image}")
    scores = _scores(found[1], len(points))
    if threshold is not None:
        keep = scores >= threshold
        points, scores = points[keep], scores[keep]
    return points, scores


def _mpp_of(mpp, image: str) -> float:
    if isinstance(mpp, dict):
        if image not in mpp:
            raise WsimitoError(f"{image}: no mpp known for this image")
        return mpp[image]
    return mpp


def _json_safe(value):
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
