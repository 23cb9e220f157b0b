"""Proposal modes measured: recall of the true boxes (IoU >= 0.5) and time per 512x512 tile.

    python benchmarks/proposals.py --data ../shared/data [--model DIR] [--synthetic 6] [--max-tiles 16] [--modes ...]

Modes: selective search fast and quality (the paper's, OpenCV contrib), segmentation (regions of phase 1's
map, the default) and segmentation+search (those regions refined by selective search in small windows).
Two image sets:

* synthetic fields (``wsimito synth``), true boxes exact from their masks;
* the MITOS 2012 fields, true boxes from ``make-boxes`` with the model's phase 1 (what phase 2 trains on).

Images are cut into 512 px tiles at the model mpp with a 32 px halo, as ``detect`` cuts slides; a true box
counts in the tile whose core holds its centre. Tiles with true boxes come first, up to ``--max-tiles`` per
set (selective search quality takes seconds per tile). Segmentation-mode times exclude the network, which
``detect`` runs anyway for the probability map; its time per tile is printed beside them.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from wsimito.config import Config
from wsimito.datasets.masks import find_labelled_images
from wsimito.datasets.points import read_centroid_csv
from wsimito.labels import make_boxes
from wsimito.bundle import MitosisModel
from wsimito.inference import propose
from wsimito.proposals import proposal_recall
from wsimito.segmentation import segment_array
from wsimito.slide import open_slide
from wsimito.synth import mitosis_boxes, write_fields
from wsimito.tiling import array_tiles
from wsimito.weights import default_model_path

MODES = ("search-fast", "search-quality", "segmentation", "segmentation+search")
TILE, HALO = 512, 32
MITOS_MPP = 0.2456


def synthetic_images(folder: Path, count: int, mpp: float, seed: int):
    """(name, RGB, true boxes) of synthetic fields at the model mpp."""
    write_fields(folder, n=count, size=1024, mpp=mpp, seed=seed)
    centroids = read_centroid_csv(folder / "centroids.csv")
    for item in find_labelled_images([folder]):
        rgb, mask = item.load()
        boxes = mitosis_boxes(mask, centroids.get(item.image.stem, np.zeros((0, 2))))
        yield item.image.stem, rgb, boxes[~np.isnan(boxes[:, 0])]


def mitos_images(data: Path, model: MitosisModel):
    """(name, RGB, boxes from make-boxes) of the MITOS 2012 fields at the model mpp."""
    folder = data / "mitos2012-icpr"
    points = read_centroid_csv(folder / "centroids.csv")
    for path in sorted((folder / "images").glob("*.jpg")):
        with open_slide(path, mpp=MITOS_MPP) as slide:
            found = make_boxes(slide, path.stem, points.get(path.stem, np.zeros((0, 2))), model.config.boxes,
                               model.segmentation)
            scale = MITOS_MPP / model.mpp
            boxes = np.array([[b.x0, b.y0, b.x1, b.y1] for b in found]).reshape(-1, 4) * scale
            yield path.stem, slide.read_whole(model.mpp), boxes


def tiles_of(rgb: np.ndarray, boxes: np.ndarray):
    """(tile RGB, true boxes in tile pixels) for each 512 px tile of the image (white beyond its edge)."""
    stride = TILE - 2 * HALO
    padded, corners = array_tiles(rgb, TILE, HALO)
    centres = np.column_stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2])
    for y, x in corners:
        inside = (centres[:, 0] >= x) & (centres[:, 0] < x + stride) & (centres[:, 1] >= y) & (
            centres[:, 1] < y + stride)
        shift = np.array([x - HALO, y - HALO] * 2)
        yield padded[y : y + TILE, x : x + TILE], boxes[inside] - shift


def measure(images, model: MitosisModel, max_tiles: int, modes=MODES) -> dict:
    tiles = [tile for _, rgb, boxes in images for tile in tiles_of(rgb, boxes)]
    tiles.sort(key=lambda tile: -min(len(tile[1]), 1))  # tiles with true boxes first (stable)
    tiles = tiles[:max_tiles]
    started = time.perf_counter()
    probs = [segment_array(model.segmentation, rgb, TILE, 0) for rgb, _ in tiles]
    result = {"tiles": len(tiles), "true_boxes": int(sum(len(b) for _, b in tiles)),
              "network_s_per_tile": (time.perf_counter() - started) / max(len(tiles), 1)}
    for mode in modes:
        config: Config = replace(model.config, detector=replace(model.config.detector, proposals=mode))
        hits, counts, started = [], [], time.perf_counter()
        for (rgb, truth), prob in zip(tiles, probs):
            found = propose(rgb, prob, config)
            counts.append(len(found))
            hits.append(proposal_recall(found, truth))
        seconds = (time.perf_counter() - started) / max(len(tiles), 1)
        hits = np.concatenate(hits) if hits else np.zeros(0, bool)
        result[mode] = {"recall": float(hits.mean()) if len(hits) else float("nan"), "s_per_tile": seconds,
                        "proposals_per_tile": float(np.mean(counts)) if counts else float("nan")}
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the shared/data folder")
    parser.add_argument("--model", type=Path, help="detector bundle (default: the shipped model)")
    parser.add_argument("--synthetic", type=int, default=6, help="synthetic 1024 px fields")
    parser.add_argument("--max-tiles", type=int, default=16, help="tiles per image set")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="proposal modes to measure")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    model = MitosisModel.load(args.model or default_model_path())
    with tempfile.TemporaryDirectory(prefix="wsimito-proposals-") as scratch:
        sets = {
            "synthetic": measure(list(synthetic_images(Path(scratch), args.synthetic, model.mpp, args.seed)), model,
                                 args.max_tiles, args.modes),
            "MITOS 2012": measure(list(mitos_images(args.data, model)), model, args.max_tiles, args.modes),
        }
    print("| images | mode | recall (IoU ≥ 0.5) | proposals / tile | s / tile |\n|---|---|---|---|---|")
    for name, result in sets.items():
        for mode in args.modes:
            r = result[mode]
            print(f"| {name} ({result['true_boxes']} boxes, {result['tiles']} tiles) | {mode} | {r['recall']:.3f} "
                  f"| {r['proposals_per_tile']:.0f} | {r['s_per_tile']:.3f} |")
        print(f"| {name} | (network, for scale) | | | {result['network_s_per_tile']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps(sets, indent=2))


if __name__ == "__main__":
    main()
