"""Calibration of detector scores: SVM margins to probabilities that mean the same across models.

A margin is only comparable with margins the SVM gives images it was not
trained on, so the margins are cross-fitted (k-fold over images). What is
calibrated is what detection reports: each image's proposals after NMS,
labelled as evaluation counts them (one correct detection per mitosis). Platt
scaling then maps a margin to the probability of a correct detection, and the
F1-best threshold on the same detections is what a bundle stores.

``fit_svm(features, best_iou, rng) -> (coef, intercept)`` is the estimator's
own SVM fit, passed in so these functions know nothing of CNNs or SVMs.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

# A region whose best IoU with a label box is at least this is the label box itself (the SVM's positives).
LABEL_BOX_IOU = 0.999


def held_out_margins(margins, features, best_iou, images, fit_svm, negative_iou: float, rng,
                     folds: int = 3) -> np.ndarray:
    """Each region's margin from an SVM trained without its image's fold (k-fold over ``images``).

    ``margins`` are the final SVM's, kept where there is nothing to hold out (a single image) or where the
    other folds lack a class.
    """
    unique = np.unique(images)
    fold_of = dict(zip(rng.permutation(unique).tolist(), np.arange(len(unique)) % max(1, folds)))
    fold = np.array([fold_of[i] for i in images.tolist()])
    margins = margins.copy()
    if len(unique) < 2:
        return margins
    for k in range(min(folds, len(unique))):
        inside = fold == k
        training = ~inside
        if not _both_classes(best_iou[training], negative_iou):
            continue
        coef, intercept = fit_svm(features[training], best_iou[training], rng)
        margins[inside] = features[inside] @ coef + intercept
    return margins


def cross_fitted_margins(margins, features, owners, train_features, train_best_iou, train_images, fit_svm,
                         negative_iou: float, rng, folds: int = 3) -> np.ndarray:
    """``margins`` with those of regions from training image ``owners`` (-1: not one) replaced by the
    margins of an SVM trained without that image's fold."""
    margins = margins.copy()
    images = np.unique(owners[owners >= 0])
    fold_of = np.arange(len(images)) % folds
    images = rng.permutation(images)
    for k in range(min(folds, len(images))):
        left_out = images[fold_of == k]
        training = ~np.isin(train_images, left_out)
        if not _both_classes(train_best_iou[training], negative_iou):
            continue
        coef, intercept = fit_svm(train_features[training], train_best_iou[training], rng)
        inside = np.isin(owners, left_out)
        margins[inside] = features[inside] @ coef + intercept
    return margins


def _both_classes(best_iou, negative_iou: float) -> bool:
    return bool((best_iou >= LABEL_BOX_IOU).any() and (best_iou < negative_iou).any())


def label_detections(targets: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """1 for the best-scoring box whose centre lies in each label box, else 0 (``targets``: box, label box).

    A box with no label box around it has its best label box as target only when it overlaps one;
    the centre test decides, as a matching radius does in evaluation.
    """
    boxes, labels = targets[:, :4], targets[:, 4:]
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    inside = (cx >= labels[:, 0]) & (cx <= labels[:, 2]) & (cy >= labels[:, 1]) & (cy <= labels[:, 3])
    positive = np.zeros(len(boxes), int)
    taken = set()
    for i in np.argsort(-scores, kind="stable"):
        key = tuple(labels[i])
        if inside[i] and key not in taken:
            taken.add(key)
            positive[i] = 1
    return positive


def fit_platt(margins: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """(a, b) of probability = sigmoid(a * margin + b): logistic regression of "is a correct detection".

    With Platt's (1999) targets, (N+ + 1) / (N+ + 2) for positives and 1 / (N- + 2) for negatives,
    rather than 1 and 0: a few held-out images are often separated perfectly, and plain 0/1 targets
    then give an infinitely steep curve whose 0.5 point is anywhere in the gap. Without both classes
    there is nothing to calibrate against, and the SVM's own scale is kept.
    """
    if len(np.unique(labels)) < 2:
        return 1.0, 0.0
    n_pos, n_neg = weights[labels == 1].sum(), weights[labels == 0].sum()
    target = np.where(labels == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    # soft targets as each sample counted twice: positive with weight t, negative with weight 1 - t
    x = np.concatenate([margins, margins])[:, None]
    y = np.r_[np.ones(len(margins)), np.zeros(len(margins))]
    calibrator = LogisticRegression(C=1e4).fit(x, y, sample_weight=np.r_[weights * target, weights * (1 - target)])
    return float(calibrator.coef_[0, 0]), float(calibrator.intercept_[0])


def platt_probability(margins: np.ndarray, platt: tuple[float, float]) -> np.ndarray:
    a, b = platt
    return 1.0 / (1.0 + np.exp(-(a * margins + b)))


def f1_best_threshold(scores, labels, weights, truth: int) -> float | None:
    """The score threshold with the best F1 over detections (``labels`` 1: correct, ``weights``: how many
    each stands for) of images holding ``truth`` mitoses; those no detection found count as missed.

    Calibrated probabilities are not F1's scale: the best threshold is about half the best F1 reachable,
    so 0.5 suits only a near-perfect detector.
    """
    if not truth or not len(scores):
        return None
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(labels[order] == 1)
    fp = np.cumsum(np.where(labels[order] == 1, 0.0, weights[order]))
    f1 = 2 * tp / (tp + fp + truth)
    return float(scores[order][int(np.argmax(f1))])
