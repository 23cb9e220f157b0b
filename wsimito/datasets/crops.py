"""Real mitosis crops: AMi-Br (3720 crops centred on a mitosis) and the PRLAB patch set.

Each crop becomes a small labelled image: one point at the centre for a
mitosis crop, none for a non-mitosis patch. ``amibr_masks`` finds the real
pixel mask of every AMi-Br crop (the chromosome masks of CellCon-GI) and the
split those masks come with, which keeps each source slide on one side.
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
# Nor do the AtNorM-MD crops; MIDOG++ was scanned at 0.23-0.25 µm/px.
ATNORM_ASSUMED_MPP = 0.25


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


@dataclass(frozen=True)
class CropMask:
    path: Path
    split: str  # "Train" or "Test": every crop of one source slide is on the same side


def amibr_masks(folder) -> dict[str, CropMask]:
    """The real pixel mask of each AMi-Br crop, by crop file stem, from ``mask_to_AMi-Br_patch.csv``."""
    folder = Path(folder)
    table = folder / "mask_to_AMi-Br_patch.csv"
    if not table.exists():
        raise WsimitoError(f"{folder}: no mask_to_AMi-Br_patch.csv (expected the AMi-Br masks folder)")
    masks = {}
    with open(table, newline="") as fh:
        for row in csv.DictReader(fh):
            path = folder / row["mask_path"]
            if not path.exists():
                raise WsimitoError(f"{path}: listed in {table} but missing")
            masks[Path(row["amibr_patch_path"]).stem] = CropMask(path, row["split"])
    return masks


def _amibr_mpp(row: dict) -> float:
    if row["dataset"] == "MIDOG21" and int(Path(row["slide"]).stem) <= 100:
        return _HAMAMATSU_MPP
    return _APERIO_MPP


def atnorm_crops(folder) -> list[Crop]:
    """AtNorM-MD crops (MIDOG++ training set: several tumour types, species and scanners), each a mitosis at
    its centre; the resolution is not stated, so the 40x scanners' usual one is assumed."""
    folder = Path(folder)
    paths = sorted((folder / "AtNorM-MD").glob("*/*.png"))
    if not paths:
        raise WsimitoError(f"{folder}: no AtNorM-MD/{{Atypical,Normal}}/*.png crops")
    return [Crop(path, ATNORM_ASSUMED_MPP, np.array([[63.5, 63.5]]), f"AtNorM-MD/{path.parent.name}/{path.stem}")
            for path in paths]


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
