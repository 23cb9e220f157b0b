"""Scores relative to their image's background: one threshold that fits slides whose whole scale shifts.

Calibrated scores rank a slide's candidates well, but the level of a slide's non-mitoses moves from slide to
slide. In leave-one-slide-out on MITOS 2012 the 95th percentile of the candidates' scores was about 0.11 on
A00's fields and 0.007-0.015 on A03's, though A03 holds the most mitoses, and the threshold best on two slides
missed most mitoses of the third (benchmarks/score_shift.py). Nearly all of an image's candidates are not
mitoses, so a high quantile of their scores says where its background lies. The relative score moves each
image's candidates, in logits, by how far that level lies from the level of the fields the model was
calibrated on; an image like those fields keeps its scores.

An image with few candidates (a crop around one mitosis) cannot say where its background lies: its level is
shrunk towards the model's by ``PRIOR_CANDIDATES`` pseudo-candidates at the model's level, so a crop keeps its
scores and a slide with thousands of candidates speaks for itself.
"""

from __future__ import annotations

import numpy as np

# Candidates' worth of weight the model's own level carries in an image's estimate.
PRIOR_CANDIDATES = 200.0
_EPS = 1e-6


def logit(scores: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(scores, np.float64), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def background_level(scores: np.ndarray, quantile: float, weights: np.ndarray | None = None) -> float:
    """The ``quantile`` of the candidates' scores in logits; ``weights``: how many candidates each stands for."""
    values = logit(scores)
    weights = np.ones(len(values)) if weights is None else np.asarray(weights, np.float64)
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    at = min(int(np.searchsorted(cumulative, quantile * cumulative[-1])), len(values) - 1)
    return float(values[order][at])


def relative_scores(scores: np.ndarray, quantile: float, reference: float, weights: np.ndarray | None = None
                    ) -> np.ndarray:
    """``scores`` (one image's candidates) moved by the distance of the image's background level, shrunk
    towards ``reference``, from ``reference`` (the level of the model's calibration fields); still in [0, 1]."""
    scores = np.asarray(scores, np.float64)
    if not len(scores):
        return scores
    count = len(scores) if weights is None else float(np.sum(weights))
    own = background_level(scores, quantile, weights)
    level = (count * own + PRIOR_CANDIDATES * reference) / (count + PRIOR_CANDIDATES)
    return 1.0 / (1.0 + np.exp(-(logit(scores) - level + reference)))
