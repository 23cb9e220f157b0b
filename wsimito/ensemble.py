"""Several R-CNNs trained alike with different seeds, scoring as one: the mean of their calibrated scores.

Phase 2 trained on the same data with another seed (which also draws its validation split, so its
calibration images) scores held-out slides very differently (on MITOS 2012, leave-one-slide-out F1 0.29, 0.35
and 0.52 for three seeds of one recipe), so one seed's model is partly a draw. The members share phase 1, hence
the proposals: each proposal gets every member's calibrated score (each Platt-scaled on whole fields, so their
scales agree, though a mean of calibrated probabilities is not itself calibrated), its box is the mean of the
members' refinements, and NMS runs once, on the mean scores, as for a single R-CNN. The threshold and the
background level are the means of the members' (train_det), not fitted on the mean scores. ``detect`` takes either
(``config``, ``predict_many``); the cost of the scoring grows with the number of members.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from wsimito.background import relative_scores
from wsimito.rcnn import RCNN, suppressed
from wsimito.stain import StainFit


class RCNNEnsemble:
    """Members' mean calibrated score per proposal. ``config`` is the members' with ``members`` set to their
    number; members must be configured alike (they differ only by the seed they were trained with)."""

    def __init__(self, members: list[RCNN]):
        if not members:
            raise ValueError("an ensemble needs at least one R-CNN")
        alike = {repr(replace(member.config, members=1)) for member in members}
        if len(alike) > 1:
            raise ValueError("the members of an ensemble must be configured alike (they differ by seed only)")
        self.members = members
        self.config = replace(members[0].config, members=len(members))

    def predict(self, rgb: np.ndarray, proposals: np.ndarray, batch_size: int = 256):
        """(boxes (N, 4), scores (N,)) after NMS, best first, as ``RCNN.predict``."""
        return self.predict_many([rgb], [proposals], batch_size)[0]

    def predict_many(self, rgbs, proposals, batch_size: int = 256, stain: StainFit | None = None
                     ) -> list[tuple[np.ndarray, np.ndarray]]:
        """``RCNN.predict_many`` with the members' mean boxes and scores."""
        return [suppressed(boxes, scores, self.config.nms_iou)
                for boxes, scores in self.score_many(rgbs, proposals, batch_size, stain)]

    def score_many(self, rgbs, proposals, batch_size: int = 256, stain: StainFit | None = None
                   ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per image, every proposal's mean refined box and mean calibrated score, before NMS. The regions are
        warped (and their staining normalised) once: the members are configured alike."""
        proposals = [np.asarray(p, np.float64).reshape(-1, 4) for p in proposals]
        regions = [self.members[0].warp(rgb, p, stain) for rgb, p in zip(rgbs, proposals)]
        scored = [member.score_warped(regions, proposals, batch_size) for member in self.members]
        return [(np.mean([boxes for boxes, _ in per_member], axis=0), np.mean([s for _, s in per_member], axis=0))
                for per_member in zip(*scored)]

    def relative(self, scores: np.ndarray) -> np.ndarray:
        """``RCNN.relative`` at the mean background level of the members that have one."""
        levels = [member.background_level_ for member in self.members if member.background_level_ is not None]
        if not self.config.background_quantile or not levels:
            return scores
        return relative_scores(scores, self.config.background_quantile, float(np.mean(levels)))

    def state(self) -> dict:
        """What rcnn.pt holds for an ensemble: each member's ``RCNN.state`` (bundle.py reads it back, checking
        each member)."""
        return {"members": [member.state() for member in self.members]}
