"""Stain normalisation (Macenko et al. 2009): each image's H&E colours mapped onto one reference staining.

Scanners and labs stain differently enough that jitter alone cannot bridge them: the MITOS 2012 fields
(scanner A) are red-pink with near-black mitoses, the AMi-Br crops (MIDOG21, TUPAC16) blue-purple; in
Ruifrok's optical-density (OD) terms their median haematoxylin differs by about 0.3. Macenko's method finds
an image's own two stain directions (the extreme angles of its tissue pixels' OD in the plane of their two
main axes), unmixes every pixel into those two stains, rescales each stain's 99th-percentile concentration
to the reference's, and remixes with the reference directions.

Images with too little tissue to estimate from (glass, a few cells) are returned unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The usual Macenko reference: stain OD directions (columns: haematoxylin, eosin) and 99th-percentile
# concentrations of a well-stained H&E image, as in Macenko's and most later implementations.
REFERENCE_STAINS = np.array([[0.5626, 0.2159], [0.7201, 0.8012], [0.4062, 0.5581]])
REFERENCE_MAX_CONCENTRATIONS = np.array([1.9705, 1.0308])
TISSUE_OD = (0.15, 3.0)  # tissue: OD within this in every channel (below: glass; above: black padding)
ANGLE_PERCENTILE = 1.0  # robust extremes of the stain angles
MIN_TISSUE_PIXELS = 500
SAMPLE_PIXELS = 20_000  # the estimate is made from at most this many tissue pixels, evenly spaced

METHODS = ("none", "macenko")


_OD_OF_UINT8 = -np.log((np.arange(256, dtype=np.float32) + 1.0) / 256.0)


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) OD of a uint8 RGB image's pixels (a table lookup: a log per pixel costs more)."""
    return _OD_OF_UINT8[rgb.reshape(-1, 3)]


def stain_vectors(tissue: np.ndarray) -> np.ndarray:
    """The (3, 2) haematoxylin and eosin OD directions of an image, from its tissue pixels' OD (N, 3)."""
    _, vectors = np.linalg.eigh(np.cov(tissue.T))
    plane = vectors[:, [2, 1]]  # the two main axes
    plane *= np.where(plane.sum(axis=0) < 0, -1, 1)  # pointing into positive OD
    projected = tissue @ plane
    angles = np.arctan2(projected[:, 1], projected[:, 0])
    low, high = np.percentile(angles, [ANGLE_PERCENTILE, 100 - ANGLE_PERCENTILE])
    first, second = (plane @ np.array([np.cos(a), np.sin(a)]) for a in (low, high))
    # haematoxylin absorbs red most: the larger first (red) component
    return np.column_stack([first, second] if first[0] > second[0] else [second, first])


@dataclass(frozen=True)
class StainFit:
    """One image's (or slide's) staining: how to unmix its OD into H and E, and each stain's 99th percentile."""

    unmix: np.ndarray  # (3, 2): OD rows -> concentrations
    maxima: np.ndarray  # (2,)


def tissue_od(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) OD of at most SAMPLE_PIXELS tissue pixels of ``rgb``, evenly spaced (glass and black left out)."""
    od = optical_density(rgb)
    tissue = np.flatnonzero(((od > TISSUE_OD[0]) & (od < TISSUE_OD[1])).all(axis=1))
    return od[tissue[:: max(1, len(tissue) // SAMPLE_PIXELS)]]


def fit_stain(images) -> StainFit | None:
    """The staining of one image, or of several images of one slide pooled (tiles spread over it), so every
    tile of a slide is normalised the same way; None with too little tissue to estimate from."""
    images = [images] if isinstance(images, np.ndarray) and images.ndim == 3 else list(images)
    sample = np.concatenate([tissue_od(rgb) for rgb in images]) if images else np.zeros((0, 3), np.float32)
    if len(sample) < MIN_TISSUE_PIXELS:
        return None
    sample = sample[:: max(1, len(sample) // SAMPLE_PIXELS)]
    unmix = np.linalg.pinv(stain_vectors(sample)).T.astype(np.float32)
    maxima = np.percentile(sample @ unmix, 99, axis=0)
    if (maxima <= 0).any():
        return None
    return StainFit(unmix, maxima)


def apply_stain(rgb: np.ndarray, fit: StainFit | None) -> np.ndarray:
    """``rgb`` (H, W, 3 uint8) mapped from the staining ``fit`` onto the reference; unchanged without a fit."""
    if fit is None:
        return rgb
    remix = ((REFERENCE_MAX_CONCENTRATIONS / fit.maxima)[:, None] * REFERENCE_STAINS.T).astype(np.float32)
    out = 256.0 * np.exp(-(optical_density(rgb) @ (fit.unmix @ remix))) - 1.0
    return np.clip(out, 0, 255).reshape(rgb.shape).astype(np.uint8)


def normalize_stain(rgb: np.ndarray, method: str = "macenko") -> np.ndarray:
    """``rgb`` (H, W, 3 uint8) in the reference staining, estimated from itself; unchanged for method "none"
    or too little tissue."""
    if method not in METHODS:
        raise ValueError(f"stain normalisation must be one of {METHODS}, got {method!r}")
    if method == "none":
        return rgb
    return apply_stain(rgb, fit_stain(rgb))
