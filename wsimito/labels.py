"""Weak point labels -> boxes: the paper's phase-1 output that phase 2 trains on.

For each point a window around it is segmented at the model's mpp; the box is
the minimum bounding rectangle of the segmented region that contains the point.
A point no region contains (or whose region is too large to be one mitosis)
gets the fallback: a fixed square in µm, or nothing. ``mode="fixed"`` skips the
segmentation (the paper's hand-sized baseline of Table 2).

Boxes are in level-0 pixels of the image: ``x0, y0`` the top-left pixel edge,
``x1, y1`` the bottom-right edge (exclusive), floats.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from wsimito.config import BoxesConfig
from wsimito.errors import WsimitoError
from wsimito.segmentation import SegmentationModel, predict_proba

MODES = ("segmentation", "fixed")


@dataclass(frozen=True)
class PointBox:
    image: str
    x: float
    y: float
    x0: float
    y0: float
    x1: float
    y1: float
    source: str  # "segmentation" or "fallback"


def make_boxes(slide, image: str, points: np.ndarray, config: BoxesConfig = BoxesConfig(),
               model: SegmentationModel | None = None, mode: str = "segmentation", device="cpu",
               batch_size: int = 8, prob: np.ndarray | None = None) -> list[PointBox]:
    """Boxes for the (x, y) level-0 ``points`` of one slide or image; dropped points are omitted.

    ``prob``: phase 1's map of the whole image at the model mpp, when the caller has it already (training
    segments every image once for its proposals): regions are read from it instead of from a window
    segmented around each point.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "segmentation" and model is None:
        raise ValueError("mode 'segmentation' needs a segmentation model")
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    regions = [None] * len(points)
    if mode == "segmentation" and prob is not None:
        regions = _regions_in_map(prob, slide, points, config, model.mpp)
    elif mode == "segmentation":
        regions = _segmented_regions(slide, points, config, model, device, batch_size)
    boxes = []
    for (x, y), region in zip(points, regions):
        if region is not None:
            boxes.append(PointBox(image, x, y, *region, "segmentation"))
        elif config.fallback == "fixed":
            half_x = config.fallback_size_um / slide.resolution.mpp_x / 2
            half_y = config.fallback_size_um / slide.resolution.mpp_y / 2
            boxes.append(PointBox(image, x, y, x - half_x, y - half_y, x + half_x, y + half_y, "fallback"))
    return boxes


def _segmented_regions(slide, points, config: BoxesConfig, model: SegmentationModel, device, batch_size):
    """Per point: the level-0 box of the segmented region containing it, or None."""
    size = _window_pixels(config.window_um, model)
    scale_x, scale_y = model.mpp / slide.resolution.mpp_x, model.mpp / slide.resolution.mpp_y
    corners = [(x + 0.5 - size / 2 * scale_x, y + 0.5 - size / 2 * scale_y) for x, y in points]
    regions = []
    for start in range(0, len(points), batch_size):
        chunk = corners[start : start + batch_size]
        windows = np.stack([slide.read_region(cx, cy, size, size, model.mpp) for cx, cy in chunk])
        for (cx, cy), prob in zip(chunk, predict_proba(model, windows, device)):
            box = region_box(prob >= config.threshold, size // 2, size // 2, config.max_box_um / model.mpp)
            if box is None:
                regions.append(None)
            else:
                c0, r0, c1, r1 = box
                regions.append((cx + c0 * scale_x, cy + r0 * scale_y, cx + c1 * scale_x, cy + r1 * scale_y))
    return regions


def _regions_in_map(prob, slide, points, config: BoxesConfig, model_mpp: float):
    """Per point: the level-0 box of the region of a whole-image map (at ``model_mpp``) containing it."""
    scale_x, scale_y = model_mpp / slide.resolution.mpp_x, model_mpp / slide.resolution.mpp_y
    mask = prob >= config.threshold
    height, width = mask.shape
    regions = []
    for x, y in points:
        col = min(max(int(round((x + 0.5) / scale_x - 0.5)), 0), width - 1)
        row = min(max(int(round((y + 0.5) / scale_y - 0.5)), 0), height - 1)
        box = region_box(mask, col, row, config.max_box_um / model_mpp)
        regions.append(None if box is None else (box[0] * scale_x, box[1] * scale_y, box[2] * scale_x,
                                                 box[3] * scale_y))
    return regions


def region_box(mask: np.ndarray, col: int, row: int, max_side: float):
    """(c0, r0, c1, r1) bounding rectangle of the 8-connected region of ``mask`` at (row, col).

    None when the pixel is not in a region, or the region is wider or taller
    than ``max_side`` pixels (a merged cluster is not one mitosis).
    """
    if not mask[row, col]:
        return None
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    left, top, width, height = stats[labels[row, col], :4]
    if max(width, height) > max_side:
        return None
    return float(left), float(top), float(left + width), float(top + height)


def _window_pixels(window_um: float, model: SegmentationModel) -> int:
    """The window side in pixels at the model mpp: even around the centre, a multiple the net accepts."""
    multiple = max(2, model.multiple)
    return max(multiple, int(round(window_um / model.mpp / multiple)) * multiple)


BOX_COLUMNS = ["image", "x", "y", "x0", "y0", "x1", "y1", "source"]


def read_boxes_csv(path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{image: (points (K, 2), boxes (K, 4))}`` from a ``make-boxes`` CSV."""
    path = Path(path)
    rows: dict[str, list] = {}
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            missing = set(BOX_COLUMNS[:7]) - set(reader.fieldnames or [])
            if missing:
                raise WsimitoError(f"{path}: not a boxes CSV (missing {', '.join(sorted(missing))})")
            for number, row in enumerate(reader, start=2):
                try:
                    rows.setdefault(row["image"], []).append([float(row[k]) for k in BOX_COLUMNS[1:7]])
                except (TypeError, ValueError):
                    raise WsimitoError(f"{path}: line {number}: coordinates must be numbers") from None
    except FileNotFoundError:
        raise WsimitoError(f"{path}: boxes file not found") from None
    return {image: (np.array(v)[:, :2], np.array(v)[:, 2:]) for image, v in rows.items()}
