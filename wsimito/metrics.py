"""Detection metrics: detections matched one-to-one to truth points within a radius in micrometres.

A mitosis is about 10 µm across whatever the scanner, so the radius is physical and each image's
radius in pixels is ``radius_um / mpp`` with that image's own mpp; a pixel radius would mean
different things at 0.23 and 0.5 µm/px.

Conventions (the same for every function here):

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

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

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
    pairs, distances = _candidate_pairs(detections, truth, radius_px)
    matched = []
    for keep in _components(pairs, len(detections), len(truth)):
        matched.append(_match_component(pairs[keep], distances[keep], rule, radius_px))
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


def _candidate_pairs(detections: np.ndarray, truth: np.ndarray, radius_px: float):
    """Every (detection, truth) pair within the radius (inclusive) and its distance."""
    if not len(detections) or not len(truth):
        return np.zeros((0, 2), np.int64), np.zeros(0)
    limit = radius_px * (1 + _RADIUS_TOLERANCE)
    near = cKDTree(detections).query_ball_point(truth, limit * (1 + 1e-6) + 1e-9)
    truth_index = np.repeat(np.arange(len(truth)), [len(n) for n in near])
    det_index = np.fromiter((d for n in near for d in n), np.int64, count=len(truth_index))
    distances = np.hypot(*(detections[det_index] - truth[truth_index]).T)
    within = distances <= limit
    return np.stack([det_index[within], truth_index[within]], axis=1), distances[within]


def _components(pairs: np.ndarray, n_detections: int, n_truth: int) -> list[np.ndarray]:
    """Pair indices grouped by connected component of the detection-truth graph.

    Components never interact in either rule, so matching them one by one is exact and keeps
    the Hungarian cost matrices small however many points an image has.
    """
    if not len(pairs):
        return []
    nodes = n_detections + n_truth
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], n_detections + pairs[:, 1])), shape=(nodes, nodes))
    _, labels = connected_components(graph, directed=False)
    label = labels[pairs[:, 0]]
    order = np.argsort(label, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(label[order])) + 1)


def _match_component(pairs: np.ndarray, distances: np.ndarray, rule: str, radius_px: float) -> np.ndarray:
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
    _check_rule(rule)
    per_image = []
    for image in _images(detections, truth, images):
        points, _ = _image_detections(detections, image, threshold)
        truth_points = _as_points(truth.get(image, ()), f"truth of {image}")
        counts = count_matches(points, truth_points, _radius_px(radius_um, _mpp_of(mpp, image)), rule)
        per_image.append(ImageResult(image, _mpp_of(mpp, image), len(truth_points), len(points), counts))
    return Evaluation(tuple(per_image), radius_um, rule, threshold)


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


# --- threshold sweep ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sweep:
    """Pooled counts at every distinct detection score used as the threshold (score >= threshold)."""

    thresholds: np.ndarray  # ascending
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    radius_um: float
    rule: str

    @property
    def precision(self) -> np.ndarray:
        return _ratios(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> np.ndarray:
        return _ratios(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> np.ndarray:
        return _ratios(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def best(self) -> int | None:
        """Index of the highest F1; ties go to the lowest threshold (more recall). None if F1 is never defined."""
        f1 = self.f1
        if not np.isfinite(f1).any():
            return None
        return int(np.flatnonzero(f1 == np.nanmax(f1))[0])

    @property
    def best_threshold(self) -> float | None:
        return None if self.best is None else float(self.thresholds[self.best])

    def rows(self) -> list[dict]:
        return [{"threshold": float(t), "tp": int(tp), "fp": int(fp), "fn": int(fn),
                 "precision": float(p), "recall": float(r), "f1": float(f)}
                for t, tp, fp, fn, p, r, f in zip(self.thresholds, self.tp, self.fp, self.fn,
                                                   self.precision, self.recall, self.f1)]


def _ratios(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.where(denominator > 0, numerator / np.maximum(denominator, 1), np.nan)


def threshold_sweep(detections: dict, truth: dict, mpp, *, images=None, radius_um: float = 8.0,
                    rule: str = "hungarian") -> Sweep:
    """Pooled TP/FP/FN at every distinct score, each equal to ``evaluate(..., threshold=score)``.

    Only the matching inside each connected component of the detection-truth graph depends on
    the threshold, so each component is re-matched at its own scores only: the cost grows with
    the size of the components (a few points each for mitoses), not with images x thresholds:
    10 000 detections over 2000 mitoses take well under a second. A component of k detections is
    matched up to k times (Hungarian stops once all its truth points are matched), so thousands of
    detections piled within one radius of each other (no NMS) would be slow, greedy most.
    """
    _check_rule(rule)
    per_image = []
    for image in _images(detections, truth, images):
        points, scores = _image_detections(detections, image, None)
        truth_points = _as_points(truth.get(image, ()), f"truth of {image}")
        per_image.append((points, scores, truth_points, _radius_px(radius_um, _mpp_of(mpp, image))))
    all_scores = np.concatenate([s for _, s, _, _ in per_image]) if per_image else np.zeros(0)
    thresholds = np.unique(all_scores)
    kept = len(all_scores) - np.searchsorted(np.sort(all_scores), thresholds, side="left")
    tp_steps = np.zeros(len(thresholds) + 1, np.int64)
    for points, scores, truth_points, radius_px in per_image:
        _add_component_steps(tp_steps, thresholds, points, scores, truth_points, radius_px, rule)
    tp = np.cumsum(tp_steps)[:-1]
    n_truth = sum(len(t) for _, _, t, _ in per_image)
    return Sweep(thresholds, tp, kept - tp, n_truth - tp, radius_um, rule)


def _add_component_steps(steps, thresholds, points, scores, truth_points, radius_px, rule) -> None:
    """Add each component's TP, a step function of the threshold, to ``steps`` (a difference array)."""
    pairs, distances = _candidate_pairs(points, truth_points, radius_px)
    for keep in _components(pairs, len(points), len(truth_points)):
        pairs_c, distances_c = pairs[keep], distances[keep]
        pair_scores = scores[pairs_c[:, 0]]
        most = len(np.unique(pairs_c[:, 1]))  # TP can never exceed the component's truth points
        tps = []
        for score in np.unique(pair_scores)[::-1]:  # descending: detections are only added
            if rule == "hungarian" and tps and tps[-1] == most:
                tps.append(most)  # the maximum matching cannot shrink when detections are added
                continue
            alive = pair_scores >= score
            tps.append(len(_match_component(pairs_c[alive], distances_c[alive], rule, radius_px)))
        # for thresholds in (next lower score, score] the kept detections are those >= score
        previous = 0
        for score, tp in zip(np.unique(pair_scores), tps[::-1]):
            at = int(np.searchsorted(thresholds, score))
            steps[previous] += tp
            steps[at + 1] -= tp
            previous = at + 1


def write_sweep_csv(sweep: Sweep, path) -> Path:
    """The sweep as CSV: threshold,tp,fp,fn,precision,recall,f1 (ascending threshold; nan where undefined)."""
    from wsimito.outputs.tables import write_csv_atomic

    return write_csv_atomic(path, ["threshold", "tp", "fp", "fn", "precision", "recall", "f1"], sweep.rows())


def plot_precision_recall(sweep: Sweep, path, title: str | None = None) -> Path:
    """A PNG of the precision-recall curve with the best-F1 point marked (drawn with OpenCV)."""
    import cv2

    width, height, left, right, top, bottom = 640, 560, 80, 30, 50, 70
    plot_w, plot_h = width - left - right, height - top - bottom
    image = np.full((height, width, 3), 255, np.uint8)
    black, grey, blue, red = (0, 0, 0), (210, 210, 210), (180, 90, 20), (30, 30, 220)
    font = cv2.FONT_HERSHEY_SIMPLEX

    def to_px(recall, precision):
        return int(round(left + recall * plot_w)), int(round(top + (1 - precision) * plot_h))

    for tick in np.linspace(0, 1, 6):
        x, y = to_px(tick, tick)
        cv2.line(image, (x, top), (x, top + plot_h), grey, 1)
        cv2.line(image, (left, y), (left + plot_w, y), grey, 1)
        cv2.putText(image, f"{tick:.1f}", (x - 12, top + plot_h + 20), font, 0.45, black, 1, cv2.LINE_AA)
        cv2.putText(image, f"{tick:.1f}", (left - 38, y + 5), font, 0.45, black, 1, cv2.LINE_AA)
    cv2.rectangle(image, (left, top), (left + plot_w, top + plot_h), black, 1)
    cv2.putText(image, "recall", (left + plot_w // 2 - 25, height - 20), font, 0.6, black, 1, cv2.LINE_AA)
    label = np.full((30, 100, 3), 255, np.uint8)
    cv2.putText(label, "precision", (5, 20), font, 0.6, black, 1, cv2.LINE_AA)
    rotated = cv2.rotate(label, cv2.ROTATE_90_COUNTERCLOCKWISE)
    y0 = top + plot_h // 2 - rotated.shape[0] // 2
    image[y0 : y0 + rotated.shape[0], 5 : 5 + rotated.shape[1]] = rotated
    title = title or f"precision-recall, radius {sweep.radius_um:g} um, {sweep.rule} matching"
    cv2.putText(image, title, (left, 30), font, 0.55, black, 1, cv2.LINE_AA)

    precision, recall = sweep.precision, sweep.recall
    order = np.argsort(-sweep.thresholds)  # high threshold (low recall) first
    defined = order[np.isfinite(precision[order]) & np.isfinite(recall[order])]
    if len(defined):
        curve = np.array([to_px(recall[i], precision[i]) for i in defined], np.int32)
        cv2.polylines(image, [curve], False, blue, 2, cv2.LINE_AA)
    best = sweep.best
    if best is not None and np.isfinite(precision[best]) and np.isfinite(recall[best]):
        point = to_px(recall[best], precision[best])
        cv2.circle(image, point, 7, red, 2, cv2.LINE_AA)
        text = f"best F1 {sweep.f1[best]:.3f} at score >= {sweep.thresholds[best]:.4g}"
        cv2.putText(image, text, (left + 10, top + plot_h - 12), font, 0.5, red, 1, cv2.LINE_AA)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise WsimitoError(f"{path}: could not encode the precision-recall plot")
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(encoded.tobytes())
    partial.replace(path)
    return path


# --- detector output ----------------------------------------------------------------------------


def read_detections_csv(path) -> dict[str, Detections]:
    """``{slide: Detections}`` from a ``detections.csv`` with at least the columns slide,x,y,score.

    x, y are level-0 pixels; other columns (the box x0,y0,x1,y1) are ignored.
    """
    path = Path(path)
    rows: dict[str, list] = {}
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            missing = {"slide", "x", "y", "score"} - set(reader.fieldnames or [])
            if missing:
                raise WsimitoError(f"{path}: needs columns slide,x,y,score (missing {', '.join(sorted(missing))})")
            for number, row in enumerate(reader, start=2):
                try:
                    values = float(row["x"]), float(row["y"]), float(row["score"])
                except (TypeError, ValueError):
                    raise WsimitoError(f"{path}: line {number}: x, y and score must be numbers") from None
                if not all(map(math.isfinite, values)):
                    raise WsimitoError(f"{path}: line {number}: x, y and score must be finite numbers")
                rows.setdefault(row["slide"], []).append(values)
    except FileNotFoundError:
        raise WsimitoError(f"{path}: detections file not found") from None
    except UnicodeDecodeError:
        raise WsimitoError(f"{path}: not a text CSV file") from None
    return {slide: Detections(np.array(v)[:, :2], np.array(v)[:, 2]) for slide, v in rows.items()}


def read_slide_table(path) -> dict[str, dict]:
    """``{slide: row}`` from a batch's ``counts.csv`` (columns slide, mpp and optionally status)."""
    path = Path(path)
    table = {}
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            missing = {"slide", "mpp"} - set(reader.fieldnames or [])
            if missing:
                raise WsimitoError(f"{path}: needs columns slide,mpp (missing {', '.join(sorted(missing))})")
            for row in reader:
                table[row["slide"]] = row
    except FileNotFoundError:
        raise WsimitoError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise WsimitoError(f"{path}: not a text CSV file") from None
    return table
