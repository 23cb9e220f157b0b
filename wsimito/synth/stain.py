"""Stain: hematoxylin and eosin concentrations -> Beer-Lambert optical density -> RGB.

Labs, batches and scanners differ and models must not care, so every image gets its own perturbed stain vectors,
illumination, optical blur and sensor noise. The scene draws concentrations; this module turns them into light.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_HEMATOXYLIN = np.array([0.60, 0.74, 0.32])  # OD per unit concentration, RGB (a Macenko-style reference)
_EOSIN = np.array([0.16, 0.82, 0.55])


@dataclass(frozen=True)
class Stain:
    """One image's staining and scanner: stain vectors, illumination, blur and noise."""

    hematoxylin: np.ndarray
    eosin: np.ndarray
    white: np.ndarray  # RGB of empty glass
    blur_px: float
    noise: float

    def to_rgb(self, hema, eosin, pen_od):
        """Beer-Lambert: transmitted light through the stains (and ink) of each pixel, float RGB."""
        rgb = np.empty(hema.shape + (3,), np.float32)
        for c in range(3):
            od = hema * np.float32(self.hematoxylin[c]) + eosin * np.float32(self.eosin[c]) + np.float32(0.012)
            if pen_od is not None:
                od += pen_od[c]
            rgb[:, :, c] = np.float32(self.white[c]) * np.exp(-od)
        return rgb


def random_stain(rng: np.random.Generator, mpp: float) -> Stain:
    """Perturbed stain vectors and strengths: labs, batches and scanners differ, and models must not care."""

    def perturb(vector, spread):
        v = np.clip(vector + rng.normal(0, spread, 3), 0.05, None)
        return v / np.linalg.norm(v)

    hema = perturb(_HEMATOXYLIN, 0.06) * rng.uniform(0.8, 1.2)
    eosin = perturb(_EOSIN, 0.05) * rng.uniform(0.7, 1.25)
    white = np.clip(rng.uniform(236, 250) + rng.normal(0, 2.5, 3), 225, 255)
    blur = float(np.clip(0.17 / mpp, 0.35, 1.2)) * rng.uniform(0.8, 1.2)
    return Stain(hema, eosin, white, blur, float(rng.uniform(1.2, 2.6)))
