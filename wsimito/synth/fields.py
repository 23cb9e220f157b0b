"""High-power fields: tumour-rich images with a chosen number of whole mitoses, and their exact truth on disk.

Phase-1 training, tests and benchmarks need small images whose every mitosis is known to the pixel. A field is a
window of a scene (tissue everywhere) placed where tumour dominates; random tumour nuclei become mitoses.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from wsimito.synth.scene import NEST_LEVEL, Scene, site_key


@dataclass
class SynthField:
    """A synthetic field: RGB image, mitosis mask (1 = mitosis), mask centroids as (x, y) = (column, row)."""

    image: np.ndarray
    mask: np.ndarray
    centroids: np.ndarray
    mpp: float


def size_pair(size) -> tuple[int, int]:
    """(height, width) from an int (square) or a pair."""
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


def make_field(size=(1024, 1024), mpp: float = 0.25, seed: int = 0, n_mitoses: int | None = None) -> SynthField:
    """A high-power field of breast carcinoma, size (h, w) pixels at mpp µm/px, with exact mitosis truth.

    n_mitoses None draws a realistic count for a mitotic hotspot (about 25 per mm², at least one where a whole
    figure fits); an explicit count that does not fit is a ValueError.
    """
    h, w = size_pair(size)
    rng = np.random.default_rng([int(seed), 0xF1E1D])
    area_mm2 = h * w * mpp * mpp / 1e6
    drawn = n_mitoses is None
    if drawn:
        n_mitoses = 1 + int(rng.poisson(25 * area_mm2))
    scene = Scene(seed, mpp)
    x0, y0 = _tumour_rich_origin(scene, rng, h, w)
    i, j, x, y = scene.cells.sites(x0 * mpp, y0 * mpp, (x0 + w) * mpp, (y0 + h) * mpp)
    tumour = np.nonzero(scene.cell_kinds(i, j, x, y) == 1)[0]
    # Random tumour nuclei become mitoses, whole figures inside the field and at least 16 µm apart.
    chosen, centroids = [], []
    for k in rng.permutation(tumour):
        if len(chosen) == n_mitoses:
            break
        if any(math.hypot(x[k] - x[c], y[k] - y[c]) < 16.0 for c in chosen):
            continue
        sprite = scene.mitosis_sprite(i[k], j[k], x[k], y[k])
        rows, cols = np.nonzero(sprite.chromatin >= 0.5)
        if (sprite.ox + cols.min() >= x0 and sprite.ox + cols.max() < x0 + w and
                sprite.oy + rows.min() >= y0 and sprite.oy + rows.max() < y0 + h):
            chosen.append(k)
            centroids.append(sprite.centroid())
    if len(chosen) < n_mitoses and not drawn:
        raise ValueError(f"a {h}x{w} field at {mpp} µm/px has room for at most {len(chosen)} mitoses")
    chosen = np.array(chosen, np.int64)
    scene.mitosis_keys = np.sort(site_key(i[chosen], j[chosen]))
    image, mask = scene.render(x0, y0, w, h)
    centroids = np.array(centroids, np.float64).reshape(-1, 2) - [x0, y0]
    return SynthField(image, mask, centroids, float(mpp))


def _tumour_rich_origin(scene: Scene, rng: np.random.Generator, h: int, w: int) -> tuple[int, int]:
    """Top-left px of a field that is mostly tumour, as pathologists choose high-power fields."""
    best, best_share = (0, 0), -1.0
    for _ in range(12):
        x0, y0 = (int(v) for v in rng.integers(0, 200_000, 2))
        xs = (x0 + np.linspace(0, w, 12))[None, :] * scene.mpp
        ys = (y0 + np.linspace(0, h, 12))[:, None] * scene.mpp
        share = float((scene.nest(xs, ys) > NEST_LEVEL).mean())
        if share > best_share:
            best, best_share = (x0, y0), share
        if share >= 0.6:
            break
    return best


def write_fields(out_dir, n: int = 8, size=1024, mpp: float = 0.25, seed: int = 0,
                 n_mitoses: int | None = None) -> list[Path]:
    """Write n fields as field_000.png (RGB) + field_000_mask.png (0/255), centroids.csv (image,x,y) and
    fields.json (mpp, seeds). Returns the image paths. The same arguments give byte-identical files.

    The PNGs record the mpp in their pHYs resolution chunk, so ``open_slide`` finds it without ``--mpp``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    h, w = size_pair(size)
    seeds = [int(s) for s in np.random.SeedSequence(int(seed)).generate_state(n, np.uint32)]
    paths, rows, records = [], [], []
    for index, field_seed in enumerate(seeds):
        f = make_field((h, w), mpp=mpp, seed=field_seed, n_mitoses=n_mitoses)
        stem = f"field_{index:03d}"
        path = out / f"{stem}.png"
        dpi = (25400.0 / mpp, 25400.0 / mpp)
        Image.fromarray(f.image).save(path, dpi=dpi)
        Image.fromarray(f.mask * np.uint8(255)).save(out / f"{stem}_mask.png", dpi=dpi)
        rows += [(stem, f"{x:.2f}", f"{y:.2f}") for x, y in f.centroids]
        records.append({"image": stem, "seed": field_seed, "mitoses": len(f.centroids)})
        paths.append(path)
    with open(out / "centroids.csv", "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["image", "x", "y"])
        writer.writerows(rows)
    meta = {"generator": "wsimito.synth.write_fields", "mpp": float(mpp), "seed": int(seed), "size": [h, w],
            "fields": records}
    (out / "fields.json").write_text(json.dumps(meta, indent=2) + "\n")
    return paths


def mitosis_boxes(mask: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """The exact box of each mitosis (NaN where it has no mask pixels): the union of the mask components
    nearest to its centroid (an anaphase has two)."""
    count, labels, stats, centres = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    boxes = np.full((len(centroids), 4), np.nan)
    for index in range(1, count if len(centroids) else 1):
        owner = int(np.argmin(np.hypot(*(centroids - centres[index]).T)))
        x, y, w, h = stats[index, :4]
        box = np.array([x, y, x + w, y + h], float)
        boxes[owner] = box if np.isnan(boxes[owner, 0]) else np.r_[np.minimum(boxes[owner, :2], box[:2]),
                                                                   np.maximum(boxes[owner, 2:], box[2:])]
    return boxes
