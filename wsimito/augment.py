"""Augmentations for H&E training crops: dihedral flips, stain/colour jitter, a 20x scan's resolution.

Scanners and labs differ mostly in stain colour and intensity, so the colour
jitter works in H&E optical-density space (Ruifrok & Johnston stain vectors,
the HED jitter of Tellez et al. 2018) rather than on raw RGB.
"""

from __future__ import annotations

import cv2
import numpy as np

from wsimito.stain import optical_density

# Rows: haematoxylin, eosin, residual (DAB) optical-density directions for RGB (Ruifrok & Johnston 2001).
_STAINS = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_STAINS = _STAINS / np.linalg.norm(_STAINS, axis=1, keepdims=True)
_UNMIX = np.linalg.inv(_STAINS)


def dihedral(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator):
    """One of the 8 flips/rotations of a square crop, the same for image and mask."""
    k = int(rng.integers(4))
    image, mask = np.rot90(image, k), np.rot90(mask, k)
    if rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)


def stain_jitter(image: np.ndarray, rng: np.random.Generator, sigma: float = 0.05,
                 brightness: float = 0.05) -> np.ndarray:
    """Scale and shift each stain's optical density by ~``sigma``, then a small brightness change."""
    if sigma <= 0 and brightness <= 0:
        return image
    concentrations = optical_density(image) @ _UNMIX.astype(np.float32)
    scale = rng.uniform(1 - sigma, 1 + sigma, 3).astype(np.float32)
    shift = rng.uniform(-sigma, sigma, 3).astype(np.float32)
    od = ((concentrations * scale + shift) @ _STAINS.astype(np.float32)).reshape(image.shape)
    rgb = 256.0 * np.exp(-od) - 1.0
    rgb *= rng.uniform(1 - brightness, 1 + brightness)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def half_resolution(image: np.ndarray, rng: np.random.Generator, fraction: float) -> np.ndarray:
    """With probability ``fraction``, the image as a 20x scan shows it at 40x: halved by area, then enlarged.

    A slide scanned at 0.5 µm/px is enlarged to the model's 0.25 µm/px, and its chromatin texture is gone;
    a model that only saw 40x crops then takes every dark, smooth nucleus for a condensed figure.
    """
    if fraction <= 0 or rng.random() >= fraction:
        return image
    height, width = image.shape[:2]
    small = cv2.resize(image, (max(1, width // 2), max(1, height // 2)), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
