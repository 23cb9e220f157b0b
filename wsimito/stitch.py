"""Tile results -> slide results: level-0 coordinates, core ownership, and one detection per mitosis.

Each tile keeps only detections whose centre falls in its core, so the halo
never counts twice. A mitosis cut by a core border can still be found from
both sides with centres a little apart; those are merged with a radius in µm,
keeping the higher score.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from wsimito.schema import DETECTION_COLUMNS
from wsimito.tiling import Tile


def tile_to_slide(tile: Tile, boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(N, 7) table (``DETECTION_COLUMNS``) of the detections whose centre lies in ``tile``'s core."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    level0 = boxes * [tile.scale_x, tile.scale_y, tile.scale_x, tile.scale_y] + [tile.x, tile.y, tile.x, tile.y]
    cx, cy = (level0[:, 0] + level0[:, 2]) / 2, (level0[:, 1] + level0[:, 3]) / 2
    x0, y0, x1, y1 = tile.core
    inside = (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)
    return np.column_stack([cx, cy, np.asarray(scores, np.float64).reshape(-1), level0])[inside]


def merge_duplicates(table: np.ndarray, radius_px: float) -> np.ndarray:
    """Greedy by score: drop any detection within ``radius_px`` of a higher-scoring one kept.

    Sorted by (score desc, y, x) first, so the result does not depend on tile order.
    """
    table = np.asarray(table, np.float64).reshape(-1, len(DETECTION_COLUMNS))
    if len(table) < 2:
        return table
    table = table[np.lexsort((table[:, 0], table[:, 1], -table[:, 2]))]
    neighbours = cKDTree(table[:, :2]).query_ball_point(table[:, :2], radius_px)
    suppressed = np.zeros(len(table), bool)
    kept = []
    for index in range(len(table)):
        if suppressed[index]:
            continue
        kept.append(index)
        suppressed[neighbours[index]] = True
    result = table[kept]
    return result[np.lexsort((result[:, 0], result[:, 1]))]
