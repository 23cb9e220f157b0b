"""MITOS 2012 pixel-level ground truth: one CSV per field, one line per mitosis.

Each line is the flat list ``x1,y1,x2,y2,...`` (x = column, y = row) of every
pixel of that mitosis. Lines may be empty (no mitosis) or end with a comma.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsimito.errors import WsimitoError


def read_pixel_lists(path) -> list[np.ndarray]:
    """One (N, 2) int array of (x, y) pixels per mitosis in the CSV at ``path``."""
    path = Path(path)
    mitoses = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = [f for f in line.replace(";", ",").split(",") if f.strip()]
        if not fields:
            continue
        try:
            values = np.array([int(float(f)) for f in fields], dtype=np.int64)
        except ValueError:
            raise WsimitoError(f"{path}: line {number} is not a list of integer pixel coordinates") from None
        if values.size % 2:
            raise WsimitoError(f"{path}: line {number} has an odd number of coordinates ({values.size})")
        mitoses.append(values.reshape(-1, 2))
    return mitoses


def pixel_lists_to_mask(mitoses: list[np.ndarray], shape: tuple[int, int], source="pixel list") -> np.ndarray:
    """A uint8 mask (1 = mitosis) of ``shape`` (rows, cols) from per-mitosis pixel lists."""
    mask = np.zeros(shape, np.uint8)
    for pixels in mitoses:
        x, y = pixels[:, 0], pixels[:, 1]
        if x.min() < 0 or y.min() < 0 or x.max() >= shape[1] or y.max() >= shape[0]:
            raise WsimitoError(
                f"{source}: pixel ({x.max()}, {y.max()}) outside the {shape[1]}x{shape[0]} image"
            )
        mask[y, x] = 1
    return mask


def pixel_list_centroids(mitoses: list[np.ndarray]) -> np.ndarray:
    """(N, 2) float centroids (x, y) of each mitosis' pixels: the point label it implies."""
    if not mitoses:
        return np.zeros((0, 2))
    return np.array([pixels.mean(axis=0) for pixels in mitoses], dtype=np.float64)
