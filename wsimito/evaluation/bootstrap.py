"""How sure a pooled F1 is: a bootstrap interval over images.

A few fields hold all the mitoses of a leave-one-slide-out run (59 on 9 MITOS
2012 fields), so a change of a few points of F1 can be noise. Resampling whole
images (not detections) keeps each field's mitoses and false detections
together, as they vary together from slide to slide.
"""

from __future__ import annotations

import numpy as np


def pooled_f1_interval(counts, rounds: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """(low, high) percentile interval of the pooled F1 over images resampled with replacement.

    ``counts``: (N, 3) TP, FP, FN per image.
    """
    counts = np.asarray(counts, np.float64).reshape(-1, 3)
    if not len(counts):
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    draws = counts[rng.integers(len(counts), size=(rounds, len(counts)))].sum(axis=1)
    tp, fp, fn = draws[:, 0], draws[:, 1], draws[:, 2]
    f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(f1, [tail, 100 - tail])
    return float(low), float(high)
