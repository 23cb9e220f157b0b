"""Real mitosis crops: AMi-Br (3720 crops centred on a mitosis) and the PRLAB patch set.

Each crop becomes a small labelled image: one point at the centre for a
mitosis crop, none for a non-mitosis patch. ``centre_figure_mask`` turns a
centred crop into a pixel pseudo-label (the dark chromatin at the centre), so
phase 1 sees real mitoses although no real pixel labels exist here.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from wsimito.errors import WsimitoError

# Scanner resolution of the images the AMi-Br crops were cut from (see its PROVENANCE.md):
# MIDOG 2021 001-100 Hamamatsu at 0.23 µm/px, 101-150 Aperio CS2 at 0.25; TUPAC16 about 0.25.
_HAMAMATSU_MPP, _APERIO_MPP = 0.23, 0.25
# The PRLAB patches do not state their resolution; they look like 40x TUPAC tiles.
PRLAB_ASSUMED_MPP = 0.25


@dataclass(frozen=True)
class Crop:
    path: Path
    mpp: float
    points: np.ndarray  # (K, 2) x, y of the mitoses in the crop (pixel-centre coordinates)
    group: str  # source image, to keep crops of one image on one side of a split


def amibr_crops(folder) -> list[Crop]:
    """All AMi-Br crops listed in ``AMI-BR.csv``, each with its centre point and scanner mpp."""
    folder = Path(folder)
    table = folder / "AMI-BR.csv"
    if not table.exists():
        raise WsimitoError(f"{folder}: no AMI-BR.csv (expected the AMi-Br data folder)")
    crops = []
    with open(table, newline="") as fh:
        for row in csv.DictReader(fh):
            kind = "atypical" if row["majority_atypical"].strip() == "True" else "normal"
            path = folder / "patches" / kind / f"{row['dataset']}_{row['uid']}.png"
            if not path.exists():
                raise WsimitoError(f"{path}: listed in {table} but missing")
            crops.append(Crop(path, _amibr_mpp(row), np.array([[63.5, 63.5]]), f"{row['dataset']}/{row['slide']}"))
    return crops


def _amibr_mpp(row: dict) -> float:
    if row["dataset"] == "MIDOG21" and int(Path(row["slide"]).stem) <= 100:
        return _HAMAMATSU_MPP
    return _APERIO_MPP


def prlab_patches(folder) -> list[Crop]:
    """PRLAB patches: ``positive_mitosis/`` with a centre point, ``negative_nonmitosis/`` with none."""
    folder = Path(folder)
    crops = []
    for kind, positive in (("positive_mitosis", True), ("negative_nonmitosis", False)):
        for path in sorted((folder / kind).glob("*.jpg")):
            h, w = cv2.imread(str(path)).shape[:2]
            points = np.array([[(w - 1) / 2, (h - 1) / 2]]) if positive else np.zeros((0, 2))
            crops.append(Crop(path, PRLAB_ASSUMED_MPP, points, "prlab/" + path.stem.rsplit("_", 1)[0]))
    if not crops:
        raise WsimitoError(f"{folder}: no positive_mitosis/ or negative_nonmitosis/ JPEGs")
    return crops


def centre_figure_mask(rgb: np.ndarray, mpp: float, radius_um: float = 5.0, max_area_um2: float = 200.0) -> np.ndarray:
    """A pseudo pixel label: the dark chromatin region that overlaps the centre disc most.

    Chromatin of a mitotic figure is the darkest haematoxylin in the crop;
    Otsu's threshold on darkness separates it. Empty (so the crop is not used
    for phase 1) when nothing dark is at the centre or the region is larger
    than a mitotic figure can be (it merged with a neighbour).
    """
    darkness = 255 - rgb.min(axis=2).astype(np.uint8)
    darkness = cv2.GaussianBlur(darkness, (0, 0), max(0.5, 0.5 / mpp * 0.25))
    threshold, _ = cv2.threshold(darkness, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    # Otsu splits tissue from glass in pale crops; chromatin is darker still.
    threshold = max(threshold, np.percentile(darkness, 88))
    dark = (darkness > threshold).astype(np.uint8)
    _, labels, _, _ = cv2.connectedComponentsWithStats(dark, connectivity=8)
    h, w = dark.shape
    yy, xx = np.mgrid[:h, :w]
    centre = (xx - (w - 1) / 2) ** 2 + (yy - (h - 1) / 2) ** 2 <= (radius_um / mpp) ** 2
    hits = labels[centre & (dark > 0)]
    if not hits.size:
        return np.zeros_like(dark)
    mask = (labels == np.bincount(hits).argmax()).astype(np.uint8)
    return mask if mask.sum() * mpp * mpp <= max_area_um2 else np.zeros_like(dark)
