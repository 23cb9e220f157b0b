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


def normalize_stain(rgb: np.ndarray, method: str = "macenko") -> np.ndarray:
    """``rgb`` (H, W, 3 uint8) in the reference staining; unchanged for method "none" or too little tissue."""
    if method not in METHODS:
        raise ValueError(f"stain normalisation must be one of {METHODS}, got {method!r}")
    if method == "none":
        return rgb
    od = optical_density(rgb)
    tissue = np.flatnonzero(((od > TISSUE_OD[0]) & (od < TISSUE_OD[1])).all(axis=1))
    if len(tissue) < MIN_TISSUE_PIXELS:
        return rgb
    sample = od[tissue[:: max(1, len(tissue) // SAMPLE_PIXELS)]]
    stains = stain_vectors(sample)
    unmix = np.linalg.pinv(stains).T.astype(np.float32)  # (3, 2): OD rows -> concentrations
    maxima = np.percentile(sample @ unmix, 99, axis=0)
    if (maxima <= 0).any():
        return rgb
    remix = ((REFERENCE_MAX_CONCENTRATIONS / maxima)[:, None] * REFERENCE_STAINS.T).astype(np.float32)
    out = 256.0 * np.exp(-(od @ (unmix @ remix))) - 1.0
    return np.clip(out, 0, 255).reshape(rgb.shape).astype(np.uint8)
