"""Resampling to a target resolution, the one way for slides and training images alike.

A slide read at 0.25 µm/px and a training crop brought to 0.25 µm/px must look
the same to the networks, so both go through ``resample_axis``: exact area
averaging when shrinking, bilinear when enlarging.
"""

from __future__ import annotations

import math

import numpy as np


def resample_axis(pixels: np.ndarray, start: float, step: float, count: int, axis: int) -> np.ndarray:
    """Resample one axis: output pixel ``u`` covers input ``[start + u*step, start + (u+1)*step)``.

    Input pixel ``i`` covers ``[i, i+1)``. Shrinking (``step >= 1``) averages
    the covered area exactly, fractional pixels included (OpenCV's INTER_AREA
    generalised to any offset); enlarging interpolates bilinearly. float32 out.
    """
    size = pixels.shape[axis]
    u = np.arange(count, dtype=np.float64)[:, None]
    if step >= 1:
        lo, hi = start + u * step, start + (u + 1) * step
        taps = np.floor(lo) + np.arange(int(math.ceil(step)) + 1)
        weights = np.clip(np.minimum(hi, taps + 1) - np.maximum(lo, taps), 0, None)
    else:
        centre = start + (u + 0.5) * step
        taps = np.floor(centre - 0.5) + np.arange(2)
        weights = np.clip(1 - np.abs(centre - (taps + 0.5)), 0, None)
    taps = np.clip(taps, 0, size - 1).astype(np.intp)
    weights = (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)
    moved = np.moveaxis(pixels, axis, 0)
    out = np.zeros((count,) + moved.shape[1:], np.float32)
    shape = (count,) + (1,) * (moved.ndim - 1)
    for j in range(taps.shape[1]):
        if weights[:, j].any():  # an aligned step (a level at the target mpp) leaves a tap no pixel uses
            out += weights[:, j].reshape(shape) * moved[taps[:, j]]
    return np.moveaxis(out, 0, axis)


def resample_to_mpp(rgb: np.ndarray, mask: np.ndarray, mpp: float, target_mpp: float):
    """Image and mask (area share >= 0.5) at ``target_mpp``; the frame keeps its physical size."""
    if abs(mpp - target_mpp) < 1e-6 * target_mpp:
        return rgb, mask
    height, width = mask.shape
    size = (max(1, round(height * mpp / target_mpp)), max(1, round(width * mpp / target_mpp)))
    step = target_mpp / mpp

    def resample(pixels):
        return resample_axis(resample_axis(pixels, 0.0, step, size[0], axis=0), 0.0, step, size[1], axis=1)

    rgb = np.rint(resample(rgb)).astype(np.uint8)
    return rgb, (resample(mask.astype(np.float32)) >= 0.5).astype(np.uint8)
