"""A detector bundle with random weights and the default config's network sizes, for speed measurements.

    python benchmarks/random_bundle.py DIR [--device cuda]

Speed does not depend on the weights, only on the nets' widths and on how many proposals the R-CNN scores. A
random net's probabilities hug 0.5, so the proposal threshold is set to the quantile of its own probabilities
that gives about ``PROPOSALS_PER_TILE`` proposals on synthetic fields, as a trained model makes on tissue with
mitoses; at the usual threshold it would give none. The probabilities differ by less than bf16's rounding, so
the quantile is found on the device (and in the precision) that the bundle will be measured on: bundles made
with the same seed on different devices have the same weights and about as many proposals. Its detections
mean nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch

from wsimito.config import load_config
from wsimito.bundle import MitosisModel
from wsimito.inference import propose
from wsimito.rcnn import RCNN
from wsimito.segmentation import SegmentationModel, predict_proba
from wsimito.synth import make_field


PROPOSALS_PER_TILE = 20


def random_bundle(directory: Path, device: str = "cpu", seed: int = 0) -> Path:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    config = load_config(None)
    segmentation = SegmentationModel.new(dataclasses.asdict(config.segmentation), config.tiling.mpp)
    fields = np.stack([make_field((config.tiling.tile_size,) * 2, mpp=config.tiling.mpp, seed=seed + i).image
                       for i in range(4)])
    probs = predict_proba(segmentation, fields, device)

    def with_threshold(quantile):
        detector = dataclasses.replace(config.detector, proposal_threshold=float(np.quantile(probs, quantile)))
        return dataclasses.replace(config, detector=detector)

    def proposals_per_tile(candidate):
        return np.mean([len(propose(rgb, prob, candidate)) for rgb, prob in zip(fields, probs)])

    candidates = [with_threshold(q) for q in np.linspace(0.5, 0.99, 50)]
    config = min(candidates, key=lambda c: abs(proposals_per_tile(c) - PROPOSALS_PER_TILE))
    rcnn = RCNN(config.detector)
    dim = rcnn.cnn.feature_dim
    rcnn.feature_mean_, rcnn.feature_scale_ = np.zeros(dim), np.ones(dim)
    rcnn.svm_coef_, rcnn.svm_intercept_, rcnn.platt_ = rng.normal(size=dim) / np.sqrt(dim), 0.0, (1.0, 0.0)
    rcnn.ridge_coef_, rcnn.ridge_intercept_ = np.zeros((4, dim)), np.zeros(4)
    notes = {"random_weights": "for speed measurements only (benchmarks/random_bundle.py)",
             "proposals_per_tile": float(proposals_per_tile(config)), "calibrated_on": device}
    return MitosisModel(segmentation, rcnn, config, notes).save(directory)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(random_bundle(args.directory, args.device))
