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
from wsimito.outputs.tables import write_csv_atomic
from wsimito.schema import BOXES_CSV_COLUMNS
from wsimito.segmentation import SegmentationModel, predict_proba
from wsimito.slide import open_slide

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
            box = region_boxes(prob >= config.threshold, [(size // 2, size // 2)], config.max_box_um / model.mpp)[0]
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
    cells = [(min(max(int(round((x + 0.5) / scale_x - 0.5)), 0), width - 1),
              min(max(int(round((y + 0.5) / scale_y - 0.5)), 0), height - 1)) for x, y in points]
    return [None if box is None else (box[0] * scale_x, box[1] * scale_y, box[2] * scale_x, box[3] * scale_y)
            for box in region_boxes(mask, cells, config.max_box_um / model_mpp)]


def region_boxes(mask: np.ndarray, cells, max_side: float) -> list:
    """Per (col, row) of ``cells``: (c0, r0, c1, r1), the bounding rectangle of the 8-connected region of
    ``mask`` there. The components are found once for all cells.

    None when the pixel is not in a region, or the region is wider or taller
    than ``max_side`` pixels (a merged cluster is not one mitosis).
    """
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    boxes = []
    for col, row in cells:
        left, top, width, height = stats[labels[row, col], :4]
        if not mask[row, col] or max(width, height) > max_side:
            boxes.append(None)
        else:
            boxes.append((float(left), float(top), float(left + width), float(top + height)))
    return boxes


def _window_pixels(window_um: float, model: SegmentationModel) -> int:
    """The window side in pixels at the model mpp: even around the centre, a multiple the net accepts."""
    multiple = max(2, model.multiple)
    return max(multiple, int(round(window_um / model.mpp / multiple)) * multiple)


def read_boxes_csv(path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{image: (points (K, 2), boxes (K, 4))}`` from a ``make-boxes`` CSV."""
    path = Path(path)
    rows: dict[str, list] = {}
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            missing = set(BOXES_CSV_COLUMNS[:7]) - set(reader.fieldnames or [])
            if missing:
                raise WsimitoError(f"{path}: not a boxes CSV (missing {', '.join(sorted(missing))})")
            for number, row in enumerate(reader, start=2):
                try:
                    rows.setdefault(row["image"], []).append([float(row[k]) for k in BOXES_CSV_COLUMNS[1:7]])
                except (TypeError, ValueError):
                    raise WsimitoError(f"{path}: line {number}: coordinates must be numbers") from None
    except FileNotFoundError:
        raise WsimitoError(f"{path}: boxes file not found") from None
    return {image: (np.array(v)[:, :2], np.array(v)[:, 2:]) for image, v in rows.items()}


@dataclass(frozen=True)
class BoxesReport:
    """What :func:`boxes_for_images` made, with the counts a user checks the labels against."""

    boxes: list[PointBox]
    images: int  # images opened
    points: int  # label points of the images given, opened or not
    unused: int  # label points of images not given (a naming mismatch shows here)
    errors: list[str]  # one line per image that could not be opened

    def count(self, source: str) -> int:
        return sum(box.source == source for box in self.boxes)

    @property
    def dropped(self) -> int:
        return self.points - len(self.boxes)


def boxes_for_images(paths, points: dict[str, np.ndarray], config: BoxesConfig = BoxesConfig(),
                     model: SegmentationModel | None = None, mode: str = "segmentation", device="cpu",
                     mpp: float | None = None) -> BoxesReport:
    """:func:`make_boxes` for every image of ``paths`` with its ``points`` (keyed by file name without extension).

    An image that cannot be opened is reported in ``errors`` and the others go on: one bad file should not
    cost a long run over many.
    """
    paths = list(paths)
    boxes, errors = [], []
    for path in paths:
        name = Path(path).stem
        try:
            with open_slide(path, mpp=mpp) as slide:
                found = make_boxes(slide, name, points.get(name, []), config, model, mode, device)
        except WsimitoError as exc:
            errors.append(str(exc))
            continue
        boxes.extend(found)
    names = {Path(path).stem for path in paths}
    return BoxesReport(boxes, len(paths) - len(errors), sum(len(points.get(name, [])) for name in names),
                       sum(len(v) for k, v in points.items() if k not in names), errors)


def write_boxes_csv(path, boxes) -> Path:
    """``boxes`` (PointBox) as the CSV of ``BOXES_CSV_COLUMNS`` that :func:`read_boxes_csv` reads back."""
    return write_csv_atomic(path, BOXES_CSV_COLUMNS, (vars(box) for box in boxes))
