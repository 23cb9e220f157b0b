"""Pixel masks for images labelled with points only, made from phase 1's own segmentation.

Whole labelled fields show phase 1 what crops centred on mitoses do not: the dark look-alikes around them
(stromal nuclei, lymphocytes) that it must leave unsegmented. Their labels are points, so a field's mask is
phase 1's segmented components that reach a labelled point; every other segmented blob becomes background,
and a point where phase 1 found nothing gets a small disk.
"""

from __future__ import annotations

import cv2
import numpy as np


def point_mask(prob: np.ndarray, points: np.ndarray, threshold: float = 0.5, reach_px: int = 20,
               disk_px: int = 10) -> np.ndarray:
    """Mask (uint8, 1 = mitosis) of the components of ``prob >= threshold`` within ``reach_px`` (a square)
    of one of ``points`` (x, y pixels of ``prob``); a disk of radius ``disk_px`` for a point none reaches."""
    count, labels = cv2.connectedComponents((prob >= threshold).astype(np.uint8))
    keep = np.zeros(count, bool)
    mask = np.zeros(prob.shape, np.uint8)
    height, width = prob.shape
    for x, y in np.asarray(points, float).reshape(-1, 2):
        cx, cy = int(round(x)), int(round(y))
        top, left = max(0, cy - reach_px), max(0, cx - reach_px)
        window = labels[top : max(0, cy + reach_px + 1), left : max(0, cx + reach_px + 1)]
        found = np.unique(window[window > 0])
        if len(found):
            keep[found] = True
        elif 0 <= cx < width and 0 <= cy < height:
            cv2.circle(mask, (cx, cy), disk_px, 1, thickness=-1)
    keep[0] = False
    mask[keep[labels]] = 1
    return mask
