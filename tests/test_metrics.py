"""Matching at a radius in µm, P/R/F1 conventions, the threshold sweep and its outputs."""

import itertools
import math

import cv2
import numpy as np
import pytest
from sklearn.neighbors import BallTree

from wsimito.errors import WsimitoError
from wsimito.evaluation import (
    MATCH_RULES,
    Counts,
    Detections,
    count_matches,
    evaluate,
    evaluate_image,
    match_points,
    plot_precision_recall,
    read_detections_csv,
    threshold_sweep,
    write_sweep_csv,
)

BOTH = pytest.mark.parametrize("rule", MATCH_RULES)


@BOTH
def test_points_exactly_on_the_radius_match(rule):
    truth = [[0, 0]]
    assert count_matches([[3, 4]], truth, 5.0, rule) == Counts(1, 0, 0)
    assert count_matches([[3, 4.001]], truth, 5.0, rule) == Counts(0, 1, 1)


@BOTH
def test_on_the_radius_in_micrometres(rule):
    """8 µm at 0.2456 µm/px is 32.57... px, not exact in floats: still a match."""
    mpp = 0.2456
    detection = [[8 / mpp, 0.0]]
    assert evaluate_image(detection, [[0.0, 0.0]], mpp=mpp, radius_um=8, rule=rule) == Counts(1, 0, 0)
    assert evaluate_image([[8.01 / mpp, 0.0]], [[0.0, 0.0]], mpp=mpp, radius_um=8, rule=rule) == Counts(0, 1, 1)


@BOTH
def test_the_same_pixels_at_another_mpp_give_another_result(rule):
    """10 px apart: 5 µm at 0.5 µm/px (outside 4 µm), 2.5 µm at 0.25 µm/px (inside)."""
    detections, truth = [[110.0, 50.0]], [[100.0, 50.0]]
    assert evaluate_image(detections, truth, mpp=0.5, radius_um=4, rule=rule) == Counts(0, 1, 1)
    assert evaluate_image(detections, truth, mpp=0.25, radius_um=4, rule=rule) == Counts(1, 0, 0)


@BOTH
def test_two_detections_near_one_truth_point(rule):
    truth = [[0.0, 0.0]]
    detections = [[4.0, 0.0], [1.0, 1.0]]
    assert count_matches(detections, truth, 5.0, rule) == Counts(1, 1, 0)
    assert match_points(detections, truth, 5.0, rule).tolist() == [[1, 0]]  # the nearer one


@BOTH
def test_ties_go_to_the_earlier_point(rule):
    # one truth point, two detections at the same distance
    assert count_matches([[1.0, 0.0], [-1.0, 0.0]], [[0.0, 0.0]], 2.0, rule) == Counts(1, 1, 0)
    # one detection, two truth points at the same distance
    assert count_matches([[0.0, 0.0]], [[-1.0, 0.0], [1.0, 0.0]], 2.0, rule) == Counts(1, 0, 1)
    if rule == "greedy":
        assert match_points([[1.0, 0.0], [-1.0, 0.0]], [[0.0, 0.0]], 2.0, rule).tolist() == [[0, 0]]
        assert match_points([[0.0, 0.0]], [[-1.0, 0.0], [1.0, 0.0]], 2.0, rule).tolist() == [[0, 0]]


def test_greedy_and_hungarian_differ():
    """The first truth point takes the detection in the middle; greedy then leaves the second unmatched."""
    truth = [[0.0, 0.0], [10.0, 0.0]]
    detections = [[5.0, 0.0], [-5.5, 0.0]]  # 5 from both truths; 5.5 from the first only
    assert count_matches(detections, truth, 6.0, "greedy") == Counts(1, 1, 1)
    assert count_matches(detections, truth, 6.0, "hungarian") == Counts(2, 0, 0)
    assert match_points(detections, truth, 6.0, "hungarian").tolist() == [[1, 0], [0, 1]]


def test_hungarian_takes_the_least_total_distance_among_the_most_matches():
    truth = [[0.0, 0.0], [10.0, 0.0]]
    detections = [[6.0, 0.0], [4.0, 0.0]]  # crossed pairs: 6 + 6; straight pairs: 4 + 4
    assert match_points(detections, truth, 7.0, "hungarian").tolist() == [[1, 0], [0, 1]]


def _brute_force_best(detections, truth, radius):
    """(most matches, least total distance) over every one-to-one matching, by enumeration."""
    best = (0, 0.0)
    n = len(detections)
    for assignment in itertools.product([None, *range(len(truth))], repeat=n):
        used = [t for t in assignment if t is not None]
        if len(used) != len(set(used)):
            continue
        distances = [math.dist(detections[d], truth[t]) for d, t in enumerate(assignment) if t is not None]
        if any(d > radius for d in distances):
            continue
        candidate = (len(distances), -sum(distances))
        best = max(best, candidate)
    return best[0], -best[1]


def test_hungarian_against_enumeration():
    rng = np.random.default_rng(3)
    for _ in range(60):
        detections = rng.uniform(0, 20, (rng.integers(0, 6), 2))
        truth = rng.uniform(0, 20, (rng.integers(0, 5), 2))
        pairs = match_points(detections, truth, 6.0, "hungarian")
        count, total = _brute_force_best(detections.tolist(), truth.tolist(), 6.0)
        assert len(pairs) == count
        assert sum(math.dist(detections[d], truth[t]) for d, t in pairs) == pytest.approx(total)


def _evalutils_score_detection(truth, predictions, radius):
    """comic/evalutils score_detection, restated: truth in order takes its nearest unused hit."""
    if not len(truth) or not len(predictions):
        return Counts(0, len(predictions), len(truth))
    hits = BallTree(predictions).query_radius(truth, r=radius, return_distance=True, sort_results=True)[0]
    used = [False] * len(predictions)
    tp = fn = 0
    for hits_for_target in hits:
        for hit in hits_for_target:
            if not used[hit]:
                used[hit] = True
                tp += 1
                break
        else:
            fn += 1
    return Counts(tp, used.count(False), fn)


def test_greedy_is_the_midog_rule():
    rng = np.random.default_rng(7)
    for _ in range(40):
        truth = rng.uniform(0, 200, (rng.integers(0, 25), 2))
        detections = rng.uniform(0, 200, (rng.integers(0, 40), 2))
        assert count_matches(detections, truth, 15.0, "greedy") == _evalutils_score_detection(truth, detections, 15.0)


def test_empty_cases():
    none = np.zeros((0, 2))
    only_truth = count_matches(none, [[1, 1], [5, 5], [9, 9]], 3.0)
    assert only_truth == Counts(0, 0, 3)
    assert math.isnan(only_truth.precision) and only_truth.recall == 0 and only_truth.f1 == 0
    only_detections = count_matches([[1, 1], [5, 5]], none, 3.0)
    assert only_detections == Counts(0, 2, 0)
    assert only_detections.precision == 0 and math.isnan(only_detections.recall) and only_detections.f1 == 0
    nothing = count_matches(none, [], 3.0)
    assert nothing == Counts(0, 0, 0)
    assert all(math.isnan(v) for v in (nothing.precision, nothing.recall, nothing.f1))


def test_pooled_numbers_sum_counts_first():
    detections = {"a": Detections(np.array([[0.0, 0.0]]), np.array([0.9])),
                  "b": Detections(np.array([[50.0, 0.0], [60.0, 0], [70.0, 0]]), np.array([0.8, 0.7, 0.6]))}
    truth = {"a": np.array([[1.0, 0.0]]), "c": np.array([[0.0, 0.0]])}
    result = evaluate(detections, truth, 0.25, radius_um=2)
    assert [r.image for r in result.per_image] == ["a", "b", "c"]
    assert [r.counts for r in result.per_image] == [Counts(1, 0, 0), Counts(0, 3, 0), Counts(0, 0, 1)]
    assert result.pooled == Counts(1, 3, 1)
    assert result.pooled.precision == 0.25 and result.pooled.recall == 0.5 and result.pooled.f1 == pytest.approx(1 / 3)
    as_dict = result.as_dict()
    assert as_dict["per_image"][1]["recall"] is None  # nan becomes null in JSON
    assert (as_dict["tp"], as_dict["fp"], as_dict["fn"], as_dict["match"]) == (1, 3, 1, "hungarian")


def test_threshold_keeps_scores_at_or_above():
    detections = {"a": Detections(np.array([[0.0, 0.0], [20.0, 0.0], [40.0, 0.0]]), np.array([0.2, 0.5, 0.9]))}
    truth = {"a": np.array([[0.0, 0.0], [40.0, 0.0]])}
    assert evaluate(detections, truth, 1.0, radius_um=3, threshold=0.5).pooled == Counts(1, 1, 1)
    assert evaluate(detections, truth, 1.0, radius_um=3, threshold=0.51).pooled == Counts(1, 0, 1)
    assert evaluate(detections, truth, 1.0, radius_um=3).pooled == Counts(2, 1, 0)


def test_mpp_per_image_and_missing_mpp():
    detections = {"a": Detections(np.array([[10.0, 0.0]]), np.array([1.0])),
                  "b": Detections(np.array([[10.0, 0.0]]), np.array([1.0]))}
    truth = {"a": np.array([[0.0, 0.0]]), "b": np.array([[0.0, 0.0]])}
    result = evaluate(detections, truth, {"a": 0.25, "b": 0.5}, radius_um=4)
    assert [r.counts.tp for r in result.per_image] == [1, 0]
    with pytest.raises(WsimitoError, match="b: no mpp"):
        evaluate(detections, truth, {"a": 0.25}, radius_um=4)


def test_bad_inputs():
    with pytest.raises(WsimitoError, match="unknown matching rule"):
        count_matches([[0, 0]], [[0, 0]], 1.0, "nearest")
    with pytest.raises(WsimitoError, match=r"\(N, 2\)"):
        count_matches([[0, 0, 0]], [[0, 0]], 1.0)
    with pytest.raises(WsimitoError, match="mpp must be a positive number"):
        evaluate_image([[0, 0]], [[0, 0]], mpp=0)


def _random_set(rng, images=3):
    detections, truth, mpp = {}, {}, {}
    for i in range(images):
        points = rng.uniform(0, 400, (rng.integers(0, 30), 2))
        near = points[: len(points) // 2] + rng.normal(0, 10, (len(points) // 2, 2))
        others = rng.uniform(0, 400, (rng.integers(0, 20), 2))
        found = np.concatenate([near, others])
        detections[f"im{i}"] = Detections(found, rng.integers(0, 12, len(found)) / 12)  # many tied scores
        truth[f"im{i}"] = points
        mpp[f"im{i}"] = rng.uniform(0.2, 0.5)
    return detections, truth, mpp


@BOTH
def test_sweep_equals_evaluate_at_every_threshold(rule):
    rng = np.random.default_rng(11)
    for _ in range(8):
        detections, truth, mpp = _random_set(rng)
        sweep = threshold_sweep(detections, truth, mpp, radius_um=4, rule=rule)
        assert np.all(np.diff(sweep.thresholds) > 0)
        for i, threshold in enumerate(sweep.thresholds):
            pooled = evaluate(detections, truth, mpp, radius_um=4, rule=rule, threshold=threshold).pooled
            assert (pooled.tp, pooled.fp, pooled.fn) == (sweep.tp[i], sweep.fp[i], sweep.fn[i])
        best = sweep.best
        assert sweep.f1[best] == np.nanmax(sweep.f1)


def test_sweep_best_threshold_ties_go_to_the_lowest_and_edge_cases():
    truth = {"a": np.array([[0.0, 0.0]])}
    detections = {"a": Detections(np.array([[0.0, 0.0], [100.0, 0.0]]), np.array([0.9, 0.1]))}
    sweep = threshold_sweep(detections, truth, 1.0, radius_um=2)
    assert sweep.thresholds.tolist() == [0.1, 0.9]
    assert sweep.tp.tolist() == [1, 1] and sweep.fp.tolist() == [1, 0] and sweep.fn.tolist() == [0, 0]
    assert sweep.best_threshold == 0.9
    tied = {"a": Detections(np.array([[0.0, 0.0], [0.5, 0.0]]), np.array([0.9, 0.3]))}
    tied_truth = {"a": np.array([[0.0, 0.0], [0.5, 0.0]])}
    sweep = threshold_sweep(tied, tied_truth, 1.0, radius_um=1)
    assert sweep.f1.tolist() == [1.0, pytest.approx(2 / 3)] and sweep.best_threshold == 0.3
    empty = threshold_sweep({}, {"a": np.zeros((0, 2))}, 1.0)
    assert len(empty.thresholds) == 0 and empty.best is None and empty.best_threshold is None


def test_sweep_is_practical_for_ten_thousand_detections():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 40000, (2000, 2))
    found = np.concatenate([truth + rng.normal(0, 12, truth.shape), rng.uniform(0, 40000, (8000, 2))])
    scores = rng.uniform(0, 1, len(found))
    for rule in MATCH_RULES:
        sweep = threshold_sweep({"s": Detections(found, scores)}, {"s": truth}, 0.25, radius_um=8, rule=rule)
        assert len(sweep.thresholds) == 10000
        assert sweep.tp[0] == evaluate({"s": Detections(found, scores)}, {"s": truth}, 0.25, rule=rule).pooled.tp


def test_sweep_csv_and_plot(tmp_path):
    rng = np.random.default_rng(5)
    detections, truth, mpp = _random_set(rng)
    sweep = threshold_sweep(detections, truth, mpp, radius_um=5)
    csv_path = write_sweep_csv(sweep, tmp_path / "out" / "sweep.csv")
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "threshold,tp,fp,fn,precision,recall,f1" and len(lines) == len(sweep.thresholds) + 1
    first = lines[1].split(",")
    assert int(first[1]) == sweep.tp[0] and float(first[0]) == pytest.approx(sweep.thresholds[0])
    png = plot_precision_recall(sweep, tmp_path / "out" / "pr.png")
    image = cv2.imread(str(png))
    assert image.shape == (560, 640, 3)
    red_marker = (image[:, :, 2] > 180) & (image[:, :, 0] < 80) & (image[:, :, 1] < 80)
    blue_curve = (image[:, :, 0] > 150) & (image[:, :, 2] < 60)
    assert red_marker.sum() > 20 and blue_curve.sum() > 50
    assert not list((tmp_path / "out").glob(".*partial*"))


def test_read_detections_csv(tmp_path):
    path = tmp_path / "detections.csv"
    path.write_text("slide,x,y,score,x0,y0,x1,y1\nA,1.5,2,0.9,0,0,3,4\nA,10,20,0.1,0,0,1,1\nB,3,4,0.5,0,0,1,1\n")
    found = read_detections_csv(path)
    assert sorted(found) == ["A", "B"]
    assert found["A"].points.tolist() == [[1.5, 2.0], [10.0, 20.0]] and found["A"].scores.tolist() == [0.9, 0.1]
    path.write_text("slide,x,y\nA,1,2\n")
    with pytest.raises(WsimitoError, match=r"detections.csv: needs columns slide,x,y,score \(missing score\)"):
        read_detections_csv(path)
    path.write_text("slide,x,y,score\nA,1,two,0.5\n")
    with pytest.raises(WsimitoError, match="detections.csv: line 2: x, y and score must be numbers"):
        read_detections_csv(path)
    with pytest.raises(WsimitoError, match="nope.csv: detections file not found"):
        read_detections_csv(tmp_path / "nope.csv")
