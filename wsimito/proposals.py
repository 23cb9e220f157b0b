"""Region proposals for the R-CNN: selective search, and the fast path from the segmentation.

Selective search (Uijlings et al. 2013, OpenCV contrib) is the paper's
faithful choice but costs seconds per 512x512 tile. A mitosis is a compact dark
region that the phase-1 network already segments, so its connected components
(with a margin) are far fewer, better proposals for a fraction of the cost;
they can be refined by selective search run only in small windows around them.

Boxes are float arrays (N, 4) of ``x0, y0, x1, y1`` pixel edges in the tile.
"""

from __future__ import annotations

import cv2
import numpy as np

SEARCH_MODES = ("fast", "quality")


def selective_search(rgb: np.ndarray, mode: str = "fast", min_side: float = 0, max_side: float = np.inf,
                     max_proposals: int | None = None) -> np.ndarray:
    """Selective-search boxes of an RGB image whose sides lie in ``[min_side, max_side]`` pixels."""
    if mode not in SEARCH_MODES:
        raise ValueError(f"selective search mode must be one of {SEARCH_MODES}, got {mode!r}")
    search = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    search.setBaseImage(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if mode == "fast":
        search.switchToSelectiveSearchFast()
    else:
        search.switchToSelectiveSearchQuality()
    rects = np.asarray(search.process(), dtype=np.float64).reshape(-1, 4)
    boxes = np.column_stack([rects[:, 0], rects[:, 1], rects[:, 0] + rects[:, 2], rects[:, 1] + rects[:, 3]])
    sides = np.minimum(rects[:, 2], rects[:, 3]), np.maximum(rects[:, 2], rects[:, 3])
    boxes = boxes[(sides[0] >= min_side) & (sides[1] <= max_side)]
    return boxes[:max_proposals] if max_proposals else boxes


def segmentation_proposals(prob: np.ndarray, threshold: float = 0.5, margin: float = 0.0,
                           min_area: float = 0.0, max_side: float = np.inf) -> np.ndarray:
    """Boxes around the connected regions of ``prob >= threshold``, grown by ``margin`` pixels each side.

    Regions smaller than ``min_area`` pixels or with a side over ``max_side`` are skipped.
    """
    count, _, stats, _ = cv2.connectedComponentsWithStats((prob >= threshold).astype(np.uint8), connectivity=8)
    stats = stats[1:].astype(np.float64)
    keep = (stats[:, cv2.CC_STAT_AREA] >= min_area) & (
        np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]) <= max_side
    )
    stats = stats[keep]
    x0, y0 = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    x1, y1 = x0 + stats[:, cv2.CC_STAT_WIDTH], y0 + stats[:, cv2.CC_STAT_HEIGHT]
    height, width = prob.shape
    return np.column_stack([
        np.clip(x0 - margin, 0, width), np.clip(y0 - margin, 0, height),
        np.clip(x1 + margin, 0, width), np.clip(y1 + margin, 0, height),
    ]).reshape(-1, 4)


def refine_with_selective_search(rgb: np.ndarray, seeds: np.ndarray, window: int, mode: str = "fast",
                                 min_side: float = 0, max_side: float = np.inf, per_seed: int = 20) -> np.ndarray:
    """The seed boxes plus up to ``per_seed`` selective-search boxes from a small window around each."""
    height, width = rgb.shape[:2]
    found = [seeds.reshape(-1, 4)]
    for x0, y0, x1, y1 in seeds.reshape(-1, 4):
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        left = int(np.clip(cx - window / 2, 0, max(0, width - window)))
        top = int(np.clip(cy - window / 2, 0, max(0, height - window)))
        crop = rgb[top : top + window, left : left + window]
        boxes = selective_search(crop, mode, min_side, max_side)
        # those that still contain the seed's centre: candidates for the same object
        inside = (boxes[:, 0] <= cx - left) & (boxes[:, 2] >= cx - left) & (boxes[:, 1] <= cy - top) & (boxes[:, 3] >= cy - top)
        found.append(boxes[inside][:per_seed] + [left, top, left, top])
    return np.concatenate(found, axis=0)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes ``a`` (N, 4) and ``b`` (M, 4) -> (N, M)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of boxes kept by greedy non-maximum suppression, highest score first."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    keep = []
    while order.size:
        best = order[0]
        keep.append(best)
        if order.size == 1:
            break
        overlap = box_iou(boxes[best], boxes[order[1:]])[0]
        order = order[1:][overlap <= iou_threshold]
    return np.asarray(keep, dtype=np.intp)
