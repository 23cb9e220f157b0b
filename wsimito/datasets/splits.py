"""Training/validation splits that keep every crop of one image on one side, for both phases."""

from __future__ import annotations

import numpy as np


def split_images(count: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Image-level split (crops of one image never land on both sides); no validation below 2 images."""
    order = np.random.default_rng(seed).permutation(count).tolist()
    n_val = min(count - 1, max(1, round(count * val_fraction))) if count > 1 and val_fraction > 0 else 0
    return sorted(order[n_val:]), sorted(order[:n_val])
