"""Region proposals for the R-CNN: selective search, and the fast path from the segmentation.

Selective search (Uijlings et al. 2013, OpenCV contrib) is the paper's
faithful choice but costs seconds per 512x512 tile. A mitosis is a compact dark
region that the phase-1 network already segments, so its connected components
are far fewer, better proposals for a fraction of the cost; they can be refined
by selective search run only in small windows around them.

One figure is often several components: the two chromosome sets of an
anaphase or telophase, the arms beside a metaphase plate, the clumps of a
prometaphase. So, as selective search groups neighbouring segments
hierarchically, the components are merged pairwise, nearest first, while the
gap between two groups is no wider than the smaller group is long (parts closer
than their own size belong together; no distance in µm is needed), and every
merged box is a proposal too. Boxes are tight around the segmented pixels by
default: the R-CNN's warp adds the context around them, and a margin lowers the
IoU with a label box fast (2 px each side of a 30 px box costs a quarter).

Boxes are float arrays (N, 4) of ``x0, y0, x1, y1`` pixel edges in the tile.
"""

from __future__ import annotations

import cv2
import numpy as np

from wsimito.boxes import box_iou

SEARCH_MODES = ("fast", "quality")
# Grouping is quadratic in the number of regions: a tile's segmentation has tens to hundreds; a noisy map
# (an untrained net) may have thousands, and then only the largest are grouped.
MAX_GROUPED_REGIONS = 400


def selective_search(rgb: np.ndarray, mode: str = "fast", min_side: float = 0, max_side: float = np.inf
                     ) -> np.ndarray:
    """Selective-search boxes of an RGB image whose sides lie in ``[min_side, max_side]`` pixels.

    OpenCV ranks its boxes with a random factor (as Uijlings et al. do), so their order changes from run to
    run though the set does not; they are returned sorted, so that a detection run can be repeated exactly.
    """
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
    return boxes[np.lexsort(boxes.T[::-1])]


def segmentation_proposals(prob: np.ndarray, threshold: float = 0.5, margin: float = 0.0,
                           min_area: float = 0.0, max_side: float = np.inf, group: bool = True) -> np.ndarray:
    """Boxes around the connected regions of ``prob >= threshold`` and, with ``group``, around groups of
    nearby regions (see the module notes), each grown by ``margin`` pixels a side.

    Regions smaller than ``min_area`` pixels are skipped; boxes with a side over ``max_side`` are dropped.
    """
    count, _, stats, _ = cv2.connectedComponentsWithStats((prob >= threshold).astype(np.uint8), connectivity=8)
    stats = stats[1:].astype(np.float64)
    stats = stats[stats[:, cv2.CC_STAT_AREA] >= min_area]
    x0, y0 = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    boxes = np.column_stack([x0, y0, x0 + stats[:, cv2.CC_STAT_WIDTH], y0 + stats[:, cv2.CC_STAT_HEIGHT]])
    boxes = boxes.reshape(-1, 4)
    if group:
        largest = np.argsort(-stats[:, cv2.CC_STAT_AREA], kind="stable")[:MAX_GROUPED_REGIONS]
        boxes = np.concatenate([boxes, group_boxes(boxes[np.sort(largest)], max_side)])
    boxes = boxes[_longest_side(boxes) <= max_side]
    height, width = prob.shape
    grown = boxes + np.array([-margin, -margin, margin, margin])
    return np.clip(grown, 0, [width, height, width, height]).reshape(-1, 4)


def group_boxes(boxes: np.ndarray, max_side: float = np.inf) -> np.ndarray:
    """The boxes of hierarchical proximity grouping: repeatedly merge the two groups with the smallest gap,
    if that gap is at most the shorter of their longest sides and the merged box has no side over
    ``max_side``; return every merged box (not the input boxes).

    Greedy nearest-first merging makes a hierarchy like selective search's: a whole figure appears as one
    box even when nearer pieces of it were merged first. Time and memory are quadratic in the number of
    boxes (see ``MAX_GROUPED_REGIONS``).
    """
    current = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(current) < 2:
        return np.zeros((0, 4))
    # cost[i, j]: the gap between live groups i and j where they may merge, else inf
    cost = _merge_cost(current, current, max_side)
    np.fill_diagonal(cost, np.inf)
    alive = np.ones(len(current), bool)
    merged = []
    while np.isfinite(cost).any():
        i, j = np.unravel_index(np.argmin(cost), cost.shape)
        union = np.r_[np.minimum(current[i, :2], current[j, :2]), np.maximum(current[i, 2:], current[j, 2:])]
        merged.append(union)
        alive[[i, j]] = False
        cost[[i, j], :] = np.inf
        cost[:, [i, j]] = np.inf
        row = np.where(alive, _merge_cost(union[None], current, max_side)[0], np.inf)
        current, alive = np.vstack([current, union]), np.r_[alive, True]
        cost = np.pad(cost, ((0, 1), (0, 1)), constant_values=np.inf)
        cost[-1, :-1] = cost[:-1, -1] = row
    return np.array(merged).reshape(-1, 4)


def _merge_cost(a: np.ndarray, b: np.ndarray, max_side: float) -> np.ndarray:
    """Gap between each box of ``a`` and of ``b`` where the two may group, else inf."""
    gaps = _gaps(a, b)
    sides = np.minimum(_longest_side(a)[:, None], _longest_side(b)[None, :])
    lo = np.minimum(a[:, None, :2], b[None, :, :2])
    hi = np.maximum(a[:, None, 2:], b[None, :, 2:])
    allowed = (gaps <= sides) & ((hi - lo).max(axis=2) <= max_side)
    return np.where(allowed, gaps, np.inf)


def _gaps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise Euclidean distance between boxes (0 where they touch or overlap)."""
    dx = np.maximum(0, np.maximum(a[:, None, 0], b[None, :, 0]) - np.minimum(a[:, None, 2], b[None, :, 2]))
    dy = np.maximum(0, np.maximum(a[:, None, 1], b[None, :, 1]) - np.minimum(a[:, None, 3], b[None, :, 3]))
    return np.hypot(dx, dy)


def _longest_side(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])


def proposal_recall(proposals: np.ndarray, truth: np.ndarray, iou: float = 0.5) -> np.ndarray:
    """Per true box, whether some proposal overlaps it with IoU >= ``iou`` (the usual proposal recall)."""
    truth = np.asarray(truth, np.float64).reshape(-1, 4)
    proposals = np.asarray(proposals, np.float64).reshape(-1, 4)
    if not len(proposals):
        return np.zeros(len(truth), bool)
    return box_iou(truth, proposals).max(axis=1) >= iou


def refine_with_selective_search(rgb: np.ndarray, seeds: np.ndarray, window: int, mode: str = "fast",
                                 min_side: float = 0, max_side: float = np.inf, per_seed: int = 20) -> np.ndarray:
    """The seed boxes plus, for each, up to ``per_seed`` selective-search boxes that contain its centre, the
    ones overlapping it most first.

    The search runs in a window three times the seed's longest side (at least 64 px, at most ``window``):
    the parts of a figure lie within its own size of each other, and the search's cost grows with the
    window's area (with 320 px windows a MITOS tile took over a minute).
    """
    height, width = rgb.shape[:2]
    seeds = seeds.reshape(-1, 4)
    found = [seeds]
    for seed in seeds:
        x0, y0, x1, y1 = seed
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        side = int(min(window, max(3 * max(x1 - x0, y1 - y0), 64)))
        left = int(np.clip(cx - side / 2, 0, max(0, width - side)))
        top = int(np.clip(cy - side / 2, 0, max(0, height - side)))
        boxes = selective_search(rgb[top : top + side, left : left + side], mode, min_side, max_side)
        boxes = boxes + [left, top, left, top]
        candidates = boxes[(boxes[:, 0] <= cx) & (boxes[:, 2] >= cx) & (boxes[:, 1] <= cy) & (boxes[:, 3] >= cy)]
        closest = np.argsort(-box_iou(seed[None], candidates)[0], kind="stable")[:per_seed]
        found.append(candidates[closest])
    return np.concatenate(found, axis=0)
