"""Phase 1 measured: validation Dice of train-seg on synthetic fields, make-boxes IoU against the exact
synthetic boxes, and make-boxes on the real MITOS 2012 fields (segmentation vs fallback), with a picture.

    python benchmarks/phase1_boxes.py --data ../shared/data --out phase1-report/

Writes report.json and mitos2012_boxes.png (crops around the first labelled points, the box drawn in
green when it came from the segmentation and in orange when it is the fixed fallback).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from wsimito.config import load_config
from wsimito.datasets import find_labelled_images
from wsimito.datasets.points import read_centroid_csv
from wsimito.labels import make_boxes
from wsimito.boxes import box_iou
from wsimito.slide import open_slide
from wsimito.synth import mitosis_boxes, write_fields
from wsimito.train_seg import train_segmentation

CONFIG = {
    "segmentation.widths": [8, 16, 32],
    "segmentation.convs_per_block": 2,
    "train_seg.epochs": 8,
    "train_seg.crop": 128,
    "train_seg.crops_per_epoch": 640,
    "train_seg.lr_min": 1e-4,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    config = load_config(None, CONFIG)
    report = {"config": CONFIG}
    started = time.perf_counter()
    write_fields(args.out / "train", n=32, size=768, mpp=0.25, seed=args.seed + 1)
    test_paths = write_fields(args.out / "test", n=12, size=768, mpp=0.25, seed=args.seed + 1000)
    images = [item.load() for item in find_labelled_images([args.out / "train"])]
    model = train_segmentation(images, config, args.out / "seg.pt", seed=args.seed)
    report["train_seg"] = {"val_dice": model.info["history"][-1]["val_dice"],
                           "val_pixel_f1": model.info["history"][-1]["val_pixel_f1"],
                           "seconds": time.perf_counter() - started}

    ious, sources = [], []
    points = read_centroid_csv(args.out / "test" / "centroids.csv")
    for path in test_paths:
        mask = (cv2.imread(str(path.with_name(path.stem + "_mask.png")), cv2.IMREAD_GRAYSCALE) > 0)
        truth = mitosis_boxes(mask, points.get(path.stem, np.zeros((0, 2))))
        with open_slide(path) as slide:
            found = make_boxes(slide, path.stem, points.get(path.stem, np.zeros((0, 2))), config.boxes, model)
        for box, expected in zip(found, truth):
            ious.append(float(box_iou(np.array([[box.x0, box.y0, box.x1, box.y1]]), expected[None])[0, 0]))
            sources.append(box.source)
    ious, sources = np.array(ious), np.array(sources)
    report["synthetic_make_boxes"] = {
        "points": len(ious),
        "segmentation": int((sources == "segmentation").sum()),
        "fallback": int((sources == "fallback").sum()),
        "iou_ge_0.5_fraction": float((ious >= 0.5).mean()),
        "iou_ge_0.5_fraction_segmentation_boxes": float((ious[sources == "segmentation"] >= 0.5).mean()),
        "median_iou": float(np.median(ious)),
    }

    folder = args.data / "mitos2012-icpr"
    real_points = read_centroid_csv(folder / "centroids.csv")
    crops, counts = [], {"segmentation": 0, "fallback": 0}
    for path in sorted((folder / "images").glob("*.jpg")):
        with open_slide(path, mpp=0.2456) as slide:
            found = make_boxes(slide, path.stem, real_points.get(path.stem, np.zeros((0, 2))), config.boxes, model)
            for box in found:
                counts[box.source] += 1
                if len(crops) < 24:
                    crops.append(_crop_with_box(slide, box))
    report["mitos2012_make_boxes"] = counts
    grid = [np.concatenate(crops[i : i + 6], axis=1) for i in range(0, len(crops) - len(crops) % 6, 6)]
    cv2.imwrite(str(args.out / "mitos2012_boxes.png"), cv2.cvtColor(np.concatenate(grid, axis=0), cv2.COLOR_RGB2BGR))
    report["seconds"] = time.perf_counter() - started
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


def _crop_with_box(slide, box, size: int = 128) -> np.ndarray:
    x0, y0 = box.x - size / 2, box.y - size / 2
    crop = np.ascontiguousarray(slide.read_region(x0, y0, size, size, slide.mpp))
    colour = (0, 200, 0) if box.source == "segmentation" else (255, 140, 0)
    cv2.rectangle(crop, (int(box.x0 - x0), int(box.y0 - y0)), (int(box.x1 - x0), int(box.y1 - y0)), colour, 1)
    return crop


if __name__ == "__main__":
    main()
