"""The two-phase method on synthetic fields, measured stage by stage: where does F1 get lost?

train-seg -> make-boxes -> train-det on fields with exact masks, then detection on held-out fields (other
seeds) scored at 8 µm. One markdown row per run: segmentation pixel F1, share of make-boxes fallbacks and
IoU of the label boxes with the exact ones, proposal recall (IoU >= 0.5 with an exact box), recall over all
scores (what the scoring can reach), the F1-best threshold, false positives near a mitosis (duplicates,
pieces of a figure) and elsewhere (look-alikes), and P/R/F1 at the configured threshold, with seconds per
phase. Several --seeds show the spread: each seed draws new fields (train and held-out) and a new training
run.

    python benchmarks/two_phase_synth.py                          # configs/synth-small.yaml, 1 run
    python benchmarks/two_phase_synth.py --seeds 0 1 2 --train-fields 24
    python benchmarks/two_phase_synth.py --set detector.proposals=search-fast --test-fields 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import yaml

from wsimito.config import load_config
from wsimito.datasets import find_labelled_images
from wsimito.datasets.points import read_centroid_csv
from wsimito.evaluation import Detections, evaluate, match_points, threshold_sweep
from wsimito.inference import detect_tiles, propose
from wsimito.boxes import box_iou
from wsimito.proposals import proposal_recall
from wsimito.synth import mitosis_boxes, write_fields
from wsimito.train_det import load_fields, train_detector
from wsimito.train_seg import train_segmentation

REPO = Path(__file__).resolve().parents[1]


def read_field(path: Path):
    """(RGB, mask) of a field written by `wsimito synth`."""
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    return rgb, cv2.imread(str(path.with_name(path.stem + "_mask.png")), cv2.IMREAD_GRAYSCALE)


def false_positives(detections, truth, radius_px: float, threshold: float) -> tuple[int, int]:
    """False positives within the radius of a mitosis (duplicates, a piece of a figure) and elsewhere
    (look-alikes: pyknotic and apoptotic nuclei, lymphocytes)."""
    near = far = 0
    for name, (points, scores) in detections.items():
        points, targets = points[scores >= threshold], truth.get(name, np.zeros((0, 2)))
        unmatched = np.setdiff1d(np.arange(len(points)), match_points(points, targets, radius_px)[:, 0])
        if len(unmatched) and len(targets):
            distance = np.hypot(*(points[unmatched, None] - targets[None]).transpose(2, 0, 1)).min(axis=1)
            near += int((distance <= radius_px).sum())
            far += int((distance > radius_px).sum())
        else:
            far += len(unmatched)
    return near, far


def run(root: Path, config, seed: int, train_fields: int, test_fields: int, size: int, mitoses: int) -> dict:
    """One full run; returns every stage's numbers and the seconds of each phase."""
    mpp = config.tiling.mpp
    row, seconds = {"seed": seed}, {}
    tick = time.perf_counter()
    train_paths = write_fields(root / "train", train_fields, size, mpp, 1000 + seed, mitoses)
    test_paths = write_fields(root / "test", test_fields, size, mpp, 2000 + seed, mitoses)
    seconds["fields"] = time.perf_counter() - tick

    tick = time.perf_counter()
    images = [item.load() for item in find_labelled_images([root / "train"])]
    segmentation = train_segmentation(images, config, root / "seg.pt", seed=seed)
    row["seg pixel F1"] = segmentation.info["history"][-1]["val_pixel_f1"]
    seconds["train-seg"] = time.perf_counter() - tick

    tick = time.perf_counter()
    fields = load_fields(train_paths, config, segmentation, mpp=mpp, points_path=root / "train/centroids.csv")
    ious = np.concatenate([np.diag(box_iou(f.boxes, mitosis_boxes(read_field(p)[1], f.points)))
                           for f, p in zip(fields, train_paths)])
    sources = [s for f in fields for s in f.sources]
    row["boxes fallback"] = sources.count("fallback") / max(1, len(sources))
    row["boxes IoU"] = float(np.median(ious))
    seconds["make-boxes"] = time.perf_counter() - tick

    tick = time.perf_counter()
    model, report = train_detector(fields, segmentation, config, seed=seed)
    row["val F1"] = report.get("val_f1", float("nan"))
    seconds["train-det"] = time.perf_counter() - tick

    tick = time.perf_counter()
    truth, detections, recalled, counts = read_centroid_csv(root / "test" / "centroids.csv"), {}, [], []
    for path in test_paths:
        rgb, mask = read_field(path)
        (prob, boxes, scores), = detect_tiles(model, rgb[None])
        found = propose(rgb, prob, model.config)
        counts.append(len(found))
        recalled.append(proposal_recall(found, mitosis_boxes(mask, truth.get(path.stem, np.zeros((0, 2))))))
        centres = np.column_stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2])
        detections[path.stem] = Detections(centres, scores)
    seconds["detect"] = time.perf_counter() - tick

    radius, threshold = config.evaluation.radius_um, config.detector.threshold
    pooled = evaluate(detections, truth, mpp, radius_um=radius, threshold=threshold).pooled
    sweep = threshold_sweep(detections, truth, mpp, radius_um=radius)
    row["mitoses"] = sum(len(p) for p in truth.values())
    row["proposals/field"] = float(np.mean(counts))
    row["proposal recall"] = float(np.concatenate(recalled).mean())
    row["recall, all scores"] = evaluate(detections, truth, mpp, radius_um=radius).pooled.recall
    row["best F1"] = float(sweep.f1[sweep.best]) if sweep.best is not None else float("nan")
    row["best thr"] = float(sweep.best_threshold) if sweep.best is not None else float("nan")
    row["FP near"], row["FP far"] = false_positives(detections, truth, radius / mpp, threshold)
    row.update({"P": pooled.precision, "R": pooled.recall, "F1": pooled.f1})
    row["seconds"] = " ".join(f"{k} {v:.0f}" for k, v in seconds.items())
    return row


def markdown(rows: list[dict]) -> str:
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(f"{row[k]:.3f}" if isinstance(row[k], float) else str(row[k])
                                       for k in header) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs/synth-small.yaml")
    parser.add_argument("--set", nargs="*", default=[], metavar="SECTION.KEY=YAML",
                        help="config overrides, e.g. detector.epochs=20")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--train-fields", type=int, default=16)
    parser.add_argument("--test-fields", type=int, default=8)
    parser.add_argument("--size", type=int, default=768, help="field side, px")
    parser.add_argument("--mitoses", type=int, default=12, help="per field")
    parser.add_argument("--out", type=Path, help="keep fields and models here (default: a temporary folder)")
    args = parser.parse_args()
    overrides = {}
    for item in args.set:
        key, value = item.split("=", 1)
        overrides[key] = yaml.safe_load(value)
    config = load_config(args.config, overrides)
    rows = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as scratch:
            root = (args.out / f"seed{seed}") if args.out else Path(scratch)
            rows.append(run(root, config, seed, args.train_fields, args.test_fields, args.size, args.mitoses))
        print(markdown(rows[-1:]) if len(rows) == 1 else markdown(rows[-1:]).splitlines()[-1], flush=True)
    if len(rows) > 1:
        f1 = np.array([r["F1"] for r in rows])
        print(f"\nF1 at the configured threshold over {len(rows)} runs: mean {f1.mean():.3f}, min {f1.min():.3f}")


if __name__ == "__main__":
    main()
