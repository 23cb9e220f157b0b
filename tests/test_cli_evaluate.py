"""``wsimito evaluate`` end to end: a detections.csv written here against the real MITOS 2012 centroids."""

import csv
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from wsimito.cli import main
from wsimito.cli.evaluate import evaluate
from wsimito.datasets.points import read_centroid_csv

MPP = 0.2456  # MITOS 2012 scanner A


def wsimito_evaluate(*args):
    """The command as registered on the main group (one-line errors come from the group)."""
    if "evaluate" not in main.commands:
        main.add_command(evaluate)
    return CliRunner().invoke(main, ["evaluate", *map(str, args)])


@pytest.fixture(scope="module")
def truth_csv(data):
    return data / "mitos2012-icpr/centroids.csv"


def write_detections(folder, truth_csv, seed=0):
    """Every truth point moved 1 µm, less the last point of three images (3 FN), two far false positives
    per image (18 FP) and one duplicate 2 µm from a truth point (1 FP). True detections score 0.6-1."""
    rng = np.random.default_rng(seed)
    truth = read_centroid_csv(truth_csv)
    rows = []
    for index, (image, points) in enumerate(sorted(truth.items())):
        keep = points[:-1] if index < 3 else points
        angles = rng.uniform(0, 2 * np.pi, len(keep))
        moved = keep + (1 / MPP) * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        rows += [(image, x, y, rng.uniform(0.6, 1.0)) for x, y in moved]
        placed = 0
        while placed < 2:
            x, y = rng.uniform(0, 2084, 2)
            if np.min(np.hypot(points[:, 0] - x, points[:, 1] - y)) * MPP > 20:  # far beyond 8 µm
                rows.append((image, x, y, rng.uniform(0.1, 0.5)))
                placed += 1
    duplicate_of = truth["A03_00"][0]
    rows.append(("A03_00", duplicate_of[0], duplicate_of[1] + 2 / MPP, 0.55))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "detections.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["slide", "x", "y", "score", "x0", "y0", "x1", "y1"])
        for image, x, y, score in rows:
            writer.writerow([image, f"{x:.3f}", f"{y:.3f}", f"{score:.4f}", x - 25, y - 25, x + 25, y + 25])
    return path


def test_end_to_end_on_real_truth(tmp_path, truth_csv):
    detections = write_detections(tmp_path / "out", truth_csv)
    result = wsimito_evaluate(detections, "--truth", truth_csv, "--mpp", MPP, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["tp"], report["fp"], report["fn"]) == (56, 19, 3)
    assert report["precision"] == pytest.approx(56 / 75) and report["recall"] == pytest.approx(56 / 59)
    assert report["f1"] == pytest.approx(112 / (112 + 19 + 3))
    assert (report["radius_um"], report["match"], report["threshold"]) == (8.0, "hungarian", None)
    per_image = {row["image"]: row for row in report["per_image"]}
    assert len(per_image) == 9 and per_image["A03_00"]["fp"] == 3 and per_image["A03_00"]["tp"] == 19
    assert per_image["A00_00"]["fn"] == 1 and per_image["A00_00"]["mpp"] == MPP


def test_threshold_radius_and_rule(tmp_path, truth_csv):
    detections = write_detections(tmp_path, truth_csv)
    above = json.loads(wsimito_evaluate(detections, "--truth", truth_csv, "--mpp", MPP, "--json",
                                        "--threshold", 0.5, "--match", "greedy").stdout)
    assert (above["tp"], above["fp"], above["fn"], above["match"]) == (56, 1, 3, "greedy")
    tight = wsimito_evaluate(detections, "--truth", truth_csv, "--mpp", MPP, "--json", "--radius-um", 0.5)
    tight = json.loads(tight.stdout)
    assert (tight["tp"], tight["fp"], tight["fn"]) == (0, 75, 59)  # every detection is 1 µm or more away
    # the same pixels at twice the mpp: 1 µm becomes 2 µm, still inside 8 µm; 0.5 µm radius still misses
    coarse = json.loads(wsimito_evaluate(detections, "--truth", truth_csv, "--mpp", 2 * MPP, "--json").stdout)
    assert coarse["tp"] == 56


def test_table_csv_and_sweep(tmp_path, truth_csv):
    detections = write_detections(tmp_path / "out", truth_csv)
    result = wsimito_evaluate(tmp_path / "out", "--truth", truth_csv, "--mpp", MPP, "-o", tmp_path / "metrics.csv",
                              "--sweep-dir", tmp_path / "sweep")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["image", "mpp", "truth", "det", "TP", "FP", "FN", "precision", "recall", "F1"]
    assert lines[10].split()[:7] == ["pooled", "59", "75", "56", "19", "3", f"{56 / 75:.3f}"]
    assert "radius 8 µm, hungarian matching, all detections" in result.stdout
    assert "sweep: best F1 " in result.stdout
    with open(tmp_path / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["image"] for r in rows][:2] == ["A00_00", "A00_08"] and len(rows) == 9
    assert sum(int(r["tp"]) for r in rows) == 56 and sum(int(r["fn"]) for r in rows) == 3
    with open(tmp_path / "sweep/sweep.csv", newline="") as fh:
        sweep = list(csv.DictReader(fh))
    # best: every true detection (scores >= 0.6) kept, every false one (<= 0.55) dropped
    best = max(sweep, key=lambda r: float(r["f1"]))
    assert (int(best["tp"]), int(best["fp"]), int(best["fn"])) == (56, 0, 3)
    assert sweep[0]["tp"] == "56" and sweep[0]["fp"] == "19"  # lowest threshold: everything kept
    assert (tmp_path / "sweep/precision_recall.png").stat().st_size > 1000
    assert f"sweep: best F1 {float(best['f1']):.3f} at score >= {float(best['threshold']):.4g}" in result.stdout


def test_mpp_and_images_from_counts_csv(tmp_path, truth_csv):
    detections = write_detections(tmp_path, truth_csv)
    missing = wsimito_evaluate(detections, "--truth", truth_csv)
    assert missing.exit_code == 1
    assert missing.output.strip() == (f"wsimito: error: A00_00: no mpp known; pass --mpp, or put a counts.csv with "
                                      f"columns slide,mpp beside {detections}")
    slides = sorted(read_centroid_csv(truth_csv))
    rows = [f"{s},{MPP},ok" for s in slides[1:]] + [f"{slides[0]},,error"]
    (tmp_path / "counts.csv").write_text("slide,mpp,status\n" + "\n".join(rows) + "\n")
    result = wsimito_evaluate(detections, "--truth", truth_csv, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    # A00_00 (6 truth, 5 found, 2 false) is skipped as failed: the rest is 51 TP, 17 FP, 2 FN
    assert (report["tp"], report["fp"], report["fn"]) == (51, 17, 2)
    assert "1 slides with a status other than ok" in result.stderr and "A00_00" in result.stderr
    assert "1 images in centroids.csv were not evaluated (A00_00)" in result.stderr


def test_one_line_errors(tmp_path, truth_csv, data):
    detections = write_detections(tmp_path / "out", truth_csv)
    (tmp_path / "empty").mkdir()
    result = wsimito_evaluate(tmp_path / "empty", "--truth", truth_csv, "--mpp", MPP)
    assert result.exit_code == 1
    assert result.output == f"wsimito: error: {tmp_path / 'empty'}: no detections.csv in this folder\n"
    bad = tmp_path / "bad.csv"
    bad.write_text("image,x,y\nA,1,2\n")
    result = wsimito_evaluate(bad, "--truth", truth_csv, "--mpp", MPP)
    assert result.exit_code == 1 and "bad.csv: needs columns slide,x,y,score" in result.output
    assert len(result.output.splitlines()) == 1
    atypia = data / "mitos-atypia14-annotations/anno_validation_2014_centroids.txt"
    result = wsimito_evaluate(detections, "--truth", atypia, "--mpp", MPP)
    assert result.exit_code == 1 and "none of its 78 images" in result.output
    assert "truth keys must equal the slide names" in result.output
    (tmp_path / "out/counts.csv").write_text("slide,mpp\nA00_00,0.2456\n")
    result = wsimito_evaluate(detections, "--truth", truth_csv)
    assert result.exit_code == 1 and "has detections but no row in" in result.output
    result = wsimito_evaluate(detections, "--truth", truth_csv, "--match", "nearest")
    assert result.exit_code == 2 and "'nearest' is not one of 'hungarian', 'greedy'" in result.output


def test_help_has_examples():
    result = wsimito_evaluate("--help")
    assert result.exit_code == 0
    assert "Examples:" in result.output and "wsimito evaluate out/ --truth" in result.output
    assert "--radius-um" in result.output and "--sweep-dir" in result.output and "--match" in result.output


def test_json_nulls_for_undefined_ratios(tmp_path):
    """An image with truth and no detections: precision is 0/0, null in JSON, - in the table."""
    (tmp_path / "detections.csv").write_text("slide,x,y,score\nA,10,10,0.9\n")
    truth = tmp_path / "truth.csv"
    truth.write_text("image,x,y\nA,10,10\nB,50,50\n")
    report = json.loads(wsimito_evaluate(tmp_path, "--truth", truth, "--mpp", 0.25, "--json").stdout)
    b = [row for row in report["per_image"] if row["image"] == "B"][0]
    assert (b["tp"], b["fn"], b["precision"], b["recall"], b["f1"]) == (0, 1, None, 0.0, 0.0)
    table = wsimito_evaluate(tmp_path, "--truth", truth, "--mpp", 0.25).stdout
    assert [line.split() for line in table.splitlines() if line.startswith("B ")][0][-3:] == ["-", "0.000", "0.000"]
    assert not math.isnan(report["f1"])
