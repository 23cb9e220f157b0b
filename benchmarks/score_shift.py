"""Does a slide's whole score scale shift? Leave-one-slide-out detections, raw and relative to their field.

    python benchmarks/score_shift.py WORKDIR --data ../shared/data [--quantiles 0.75 0.9 0.95]

WORKDIR is a recipe's ``--workdir`` after ``--loso``: its ``loso-detections.csv`` holds every held-out
detection at any score, as ``detect`` scored it (already relative to the field for a model with
``detector.background_quantile``; the relative rows then move them again). Most of a field's candidates are
not mitoses, so a high quantile of its scores says where its background lies. If that level moves from slide
to slide, one threshold cannot fit every slide, however well the scores rank candidates within a slide.

Printed, per field: candidates, labelled mitoses and score quantiles. Then pooled F1 at 8 µm for the scores as
stored and for scores relative to the field (logit of the score minus the field's quantile of logits), each
with two thresholds chosen without the held-out slide's labels being used for it:
* pooled oracle: the best single threshold over all folds, chosen on the test folds (an upper bound);
* cross-fold: each slide counted at the best threshold of the other slides' detections.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

from wsimito.background import logit
from wsimito.datasets.points import read_centroid_csv
from wsimito.evaluation import Detections, evaluate, threshold_sweep
from wsimito.recipe import LOSO_DETECTIONS, MITOS_MPP, MITOS_SLIDES, mitos_fields

RADIUS_UM = 8.0


def read_detections(path: Path) -> tuple[dict, dict]:
    """{field: Detections} and {field: fold} from a recipe's loso-detections.csv."""
    rows, folds = defaultdict(list), {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            rows[row["field"]].append((float(row["x"]), float(row["y"]), float(row["score"])))
            folds[row["field"]] = row["fold"]
    tables = {name: np.array(r) for name, r in rows.items()}
    return {name: Detections(t[:, :2], t[:, 2]) for name, t in tables.items()}, folds


def loso_with_truth(workdir: Path, data: Path) -> tuple[dict, dict, dict]:
    """A recipe workdir's held-out detections, folds and labelled points, per MITOS 2012 field; a field without
    any detection is there too, with its mitoses."""
    detections, folds = read_detections(workdir / LOSO_DETECTIONS)
    for path in mitos_fields(data, MITOS_SLIDES)[0]:
        detections.setdefault(path.stem, Detections(np.zeros((0, 2)), np.zeros(0)))
        folds.setdefault(path.stem, path.stem[:3])
    points = read_centroid_csv(data / "mitos2012-icpr" / "centroids.csv")
    return detections, folds, {name: points.get(name, np.zeros((0, 2))) for name in detections}


def relative(detections: dict, quantile: float) -> dict:
    """Each field's scores as logits minus the field's ``quantile`` of them (no shrinkage: wsimito.background
    shrinks a level towards the model's by its PRIOR_CANDIDATES)."""
    return {name: Detections(d.points, logit(d.scores) - np.quantile(logit(d.scores), quantile))
            for name, d in detections.items()}


def pooled_oracle(detections: dict, truth: dict) -> float:
    sweep = threshold_sweep(detections, truth, MITOS_MPP, radius_um=RADIUS_UM)
    return float(sweep.f1[sweep.best])


def cross_fold(detections: dict, truth: dict, folds: dict) -> tuple[float, list]:
    """F1 with each slide counted at the threshold best on the other slides; and the per-slide thresholds."""
    counts, thresholds = np.zeros(3), []
    for fold in sorted(set(folds.values())):
        other = [name for name in detections if folds[name] != fold]
        sweep = threshold_sweep({n: detections[n] for n in other}, {n: truth[n] for n in other}, MITOS_MPP,
                                radius_um=RADIUS_UM)
        mine = [name for name in detections if folds[name] == fold]
        result = evaluate({n: detections[n] for n in mine}, {n: truth[n] for n in mine}, MITOS_MPP,
                          radius_um=RADIUS_UM, threshold=float(sweep.best_threshold)).pooled
        counts += [result.tp, result.fp, result.fn]
        thresholds.append(float(sweep.best_threshold))
    tp, fp, fn = counts
    return 2 * tp / max(2 * tp + fp + fn, 1), thresholds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--data", type=Path, required=True, help="the shared/data folder")
    parser.add_argument("--quantiles", type=float, nargs="+", default=[0.75, 0.9, 0.95])
    args = parser.parse_args(argv)
    detections, folds, truth = loso_with_truth(args.workdir, args.data)
    print("field     candidates  mitoses  score q50 / q90 / q95")
    for name, d in sorted(detections.items()):
        q = np.quantile(d.scores, [0.5, 0.9, 0.95]) if len(d.scores) else np.full(3, np.nan)
        print(f"{name:9} {len(d.scores):10d} {len(truth[name]):8d}  {q[0]:.4f} / {q[1]:.4f} / {q[2]:.4f}")
    print("\nscores                     pooled-oracle F1  cross-fold F1  (cross-fold thresholds)")
    variants = [("as detect scored them", detections)]
    variants += [(f"relative to field q{q:g}", relative(detections, q)) for q in args.quantiles]
    for label, scored in variants:
        f1, thresholds = cross_fold(scored, truth, folds)
        chosen = ", ".join(f"{t:.3g}" for t in thresholds)
        print(f"{label:26} {pooled_oracle(scored, truth):16.3f} {f1:14.3f}  ({chosen})")


if __name__ == "__main__":
    main()
