"""A quick-look PNG: the slide thumbnail with the tissue outline and the detections drawn."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from wsimito.outputs.atomic import atomic_path
from wsimito.schema import DETECTION_COLUMNS


def write_overlay(path, thumbnail: np.ndarray, tissue_mask: np.ndarray, table: np.ndarray,
                  level0_per_px: tuple[float, float]) -> Path:
    """Draw on ``thumbnail`` (RGB); ``level0_per_px`` maps level-0 coordinates to thumbnail pixels."""
    image = cv2.cvtColor(np.ascontiguousarray(thumbnail), cv2.COLOR_RGB2BGR)
    mask = cv2.resize(tissue_mask.astype(np.uint8), (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(image, contours, -1, (60, 160, 60), 1)
    sx, sy = level0_per_px
    radius = max(3, int(round(min(image.shape[:2]) / 150)))
    for x, y in np.asarray(table).reshape(-1, len(DETECTION_COLUMNS))[:, :2]:
        cv2.circle(image, (int(round(x / sx)), int(round(y / sy))), radius, (60, 30, 230), 1, cv2.LINE_AA)
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(cv2.imencode(".png", image)[1].tobytes())  # imwrite would want .png in the name
    return path
