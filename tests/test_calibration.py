"""The threshold train-det picks: the best F1 over calibration detections, misses counted."""

import numpy as np

from wsimito.calibration import f1_best_threshold


def test_best_f1_threshold_counts_missed_mitoses_and_weighted_negatives():
    scores = np.array([0.9, 0.8, 0.6, 0.4, 0.3, 0.1])
    labels = np.array([1, 0, 1, 0, 1, 0])
    weights = np.array([1.0, 1.0, 1.0, 10.0, 1.0, 1.0])  # the 0.4 negative stands for ten proposals
    # 4 mitoses, one of them never proposed. F1 at 0.9: 2/(1+0+4)=0.4; at 0.6: 4/(2+1+4)=0.571;
    # at 0.3: 6/(3+11+4)=0.333
    assert f1_best_threshold(scores, labels, weights, truth=4) == 0.6
    assert f1_best_threshold(scores, labels, np.ones(6), truth=3) == 0.3  # 6/(3+2+3)=0.75 beats 4/(2+1+3)
    assert f1_best_threshold(scores, labels, weights, truth=0) is None
