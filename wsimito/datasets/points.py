"""Point labels: one row per mitosis, ``image,x,y`` (x = column, y = row, pixels).

The layout of ``mitos2012-icpr/centroids.csv`` and of ``wsimito synth``'s
``centroids.csv``; ``image`` is the file name without extension.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from wsimito.errors import WsimitoError


def read_centroid_csv(path) -> dict[str, np.ndarray]:
    """``{image: (N, 2) float array of (x, y)}`` from a centroid CSV with an ``image,x,y`` header."""
    path = Path(path)
    points: dict[str, list] = {}
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            missing = {"image", "x", "y"} - set(reader.fieldnames or [])
            if missing:
                raise WsimitoError(f"{path}: needs columns image,x,y (missing {', '.join(sorted(missing))})")
            for number, row in enumerate(reader, start=2):
                try:
                    points.setdefault(Path(row["image"]).stem, []).append((float(row["x"]), float(row["y"])))
                except (TypeError, ValueError):
                    raise WsimitoError(f"{path}: line {number}: x and y must be numbers") from None
    except FileNotFoundError:
        raise WsimitoError(f"{path}: points file not found") from None
    return {image: np.array(rows, dtype=np.float64) for image, rows in points.items()}
