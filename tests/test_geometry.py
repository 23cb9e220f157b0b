"""Geometry end to end: a slide scanned at 0.5 µm/px, a model at 0.25 µm/px that marks dark disks, `wsimito
detect` between them. Every disk is found once and where it is, wherever it falls (inside a tile's core, across
a border between cores, at the corner of four, near the slide's edge, off the pixel grid), through the tile
grid, the resampling to the model's mpp, the stitching of cores and the merging of duplicates; the Zarr map is
high on the disks and low elsewhere, and the clinical columns agree with the detections."""

import csv
import math
import subprocess
from pathlib import Path

import cv2
import numpy as np
import yaml
import zarr

from tests.conftest import DARK_DISK_MODEL_MPP, check_clinical_columns, write_pyramid

MODEL_MPP, SLIDE_MPP = DARK_DISK_MODEL_MPP, 0.5
TILE, HALO = 256, 32  # the run's tiles: cores of 192 px at the model's mpp, 96 px of the slide
CORE = (TILE - 2 * HALO) * MODEL_MPP / SLIDE_MPP
SIZE = (1000, 1400)  # slide height, width in pixels: 500 x 700 µm
RADIUS_UM = 4.0
PINK, PURPLE = (235, 180, 215), (70, 35, 110)
# Disk centres (x, y), slide pixels: in cores, across a vertical and a horizontal core border, at a corner of
# four cores, 15 µm from the left edge and from the bottom edge, and off the pixel grid.
DISKS = [(150.0, 150.0), (5 * CORE, 250.0), (700.0, 3 * CORE), (8 * CORE, 6 * CORE), (30.0, 600.0),
         (1000.0, SIZE[0] - 30.0), (333.3, 777.7), (1234.5, 123.25), (5 * CORE + 3.5, 8 * CORE - 4.5)]
TOLERANCE_UM = 8.0  # MITOS' matching radius, as the issue asks; the measured worst is far below (see below)
MEASURED_WORST_UM = 0.5  # a slide pixel; measured 0.125 µm (a sub-pixel centre drawn at 1/16 px, found to 1/4)


def dark_disk_slide(path: Path) -> Path:
    """Pink tissue with purple disks of RADIUS_UM, anti-aliased at sub-pixel centres; a lossless pyramid."""
    image = np.empty((*SIZE, 3), np.uint8)
    image[:] = PINK
    shift = 4  # cv2 draws at 1/16 px
    for x, y in DISKS:
        cv2.circle(image, (round(x * 16), round(y * 16)), round(RADIUS_UM / SLIDE_MPP * 16), PURPLE, -1,
                   cv2.LINE_AA, shift)
    return write_pyramid(path, image, SLIDE_MPP)


def test_disks_are_found_once_each_where_they_are_across_tiles_resampling_and_stitching(dark_disk_model, tmp_path):
    bundle = dark_disk_model
    slide = dark_disk_slide(tmp_path / "disks.tiff")
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"tiling": {"tile_size": TILE, "halo": HALO}}))
    out = tmp_path / "out"
    result = subprocess.run(["wsimito", "detect", str(slide), "-o", str(out), "--model", str(bundle), "--config",
                             str(config), "--quiet"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    with open(out / "counts.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    with open(out / "detections.csv", newline="") as fh:
        found = np.array([[float(d["x"]), float(d["y"])] for d in csv.DictReader(fh)]).reshape(-1, 2)
    assert row["status"] == "ok" and float(row["mpp"]) == SLIDE_MPP and int(row["tiles"]) > 40
    truth = np.array(DISKS) + 0.5  # cv2 puts pixel i's centre at i; wsimito's frame, as QuPath's, at i + 0.5
    distance_um = np.hypot(*(found[:, None] - truth[None]).transpose(2, 0, 1)) * SLIDE_MPP  # found x truth
    nearest = distance_um.min(axis=0)
    assert len(found) == len(DISKS), f"{len(found)} detections for {len(DISKS)} disks:\n{found}"
    print("distance to the truth, µm:", nearest.round(3))
    assert (nearest <= TOLERANCE_UM).all(), dict(zip(DISKS, nearest.round(2)))
    assert sorted(distance_um.argmin(axis=0)) == list(range(len(DISKS)))  # one detection per disk
    assert nearest.max() <= MEASURED_WORST_UM, nearest.round(2)

    # the stored map, at the model's mpp: high on every disk, low on the pink far from them
    store = zarr.open_group(str(out / "disks.zarr"), mode="r")
    level0 = store["probability/0"][:]
    scale = SLIDE_MPP / MODEL_MPP
    assert level0.shape[0] >= SIZE[0] * scale and level0.shape[1] >= SIZE[1] * scale
    for x, y in DISKS:
        assert level0[int(y * scale), int(x * scale)] >= 250, (x, y)
    yy, xx = np.mgrid[0 : SIZE[0], 0 : SIZE[1]]
    far = np.min([np.hypot(xx - x, yy - y) for x, y in DISKS], axis=0) > 2 * RADIUS_UM / SLIDE_MPP
    pink = level0[: SIZE[0] * 2 : 2, : SIZE[1] * 2 : 2][far]
    assert pink.max() <= math.ceil(255 / (1 + math.exp(4))) and pink.min() >= 1  # written, and low
    check_clinical_columns(row, found)
