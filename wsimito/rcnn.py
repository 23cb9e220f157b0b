"""R-CNN for mitoses (Girshick et al. 2014): warp regions, CNN features, linear SVM, box regression.

Follows scikit-learn's estimator shape: ``RCNN(config).fit(samples)`` then
``predict(rgb, proposals)``. Training, as in the paper:

1. regions (proposals, label boxes and jittered copies) are warped with
   context padding to a fixed square;
2. the CNN is trained on them in minibatches of 32 positives (IoU >= 0.5 with
   a label box) and 96 negatives;
3. a linear SVM on the CNN features separates label boxes from regions with
   IoU < 0.3, with hard-negative mining;
4. SVM margins are calibrated to probabilities (Platt scaling), so one
   threshold means the same across models;
5. ridge regression on the features refines boxes (pairs with IoU > 0.6).

The state is tensors and plain numbers only: it saves with ``torch.save`` and
loads with ``weights_only=True``, no pickled code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.svm import LinearSVC

from wsimito.augment import dihedral, stain_jitter
from wsimito.config import DetectorConfig, plain
from wsimito.nets.cnn import RegionCNN
from wsimito.proposals import box_iou, nms
from wsimito.segmentation import to_tensor


@dataclass
class Sample:
    """One training image at the model mpp, its label boxes and its proposals (pixels)."""

    rgb: np.ndarray
    boxes: np.ndarray  # (K, 4) label boxes
    proposals: np.ndarray  # (P, 4)


def warp_regions(rgb: np.ndarray, boxes: np.ndarray, size: int, context: int) -> np.ndarray:
    """(N, size, size, 3) uint8: each box stretched to ``size - 2*context`` px with context around it."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    out = np.empty((len(boxes), size, size, 3), np.uint8)
    inner = size - 2 * context
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        sx, sy = max(x1 - x0, 1.0) / inner, max(y1 - y0, 1.0) / inner  # input px per output px
        matrix = np.array([[sx, 0, x0 - context * sx + 0.5 * sx - 0.5], [0, sy, y0 - context * sy + 0.5 * sy - 0.5]])
        out[i] = cv2.warpAffine(rgb, matrix, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=(255, 255, 255))
    return out


def encode_boxes(proposals: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Girshick's regression targets (tx, ty, tw, th) from proposals to target boxes."""
    pw, ph = proposals[:, 2] - proposals[:, 0], proposals[:, 3] - proposals[:, 1]
    px, py = proposals[:, 0] + pw / 2, proposals[:, 1] + ph / 2
    gw, gh = targets[:, 2] - targets[:, 0], targets[:, 3] - targets[:, 1]
    gx, gy = targets[:, 0] + gw / 2, targets[:, 1] + gh / 2
    return np.column_stack([(gx - px) / pw, (gy - py) / ph, np.log(gw / pw), np.log(gh / ph)])


def decode_boxes(proposals: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    pw, ph = proposals[:, 2] - proposals[:, 0], proposals[:, 3] - proposals[:, 1]
    px, py = proposals[:, 0] + pw / 2, proposals[:, 1] + ph / 2
    cx, cy = px + pw * deltas[:, 0], py + ph * deltas[:, 1]
    w, h = pw * np.exp(np.clip(deltas[:, 2], -1, 1)), ph * np.exp(np.clip(deltas[:, 3], -1, 1))
    return np.column_stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


class RCNN:
    """Scores and refines mitosis proposals. ``fit`` trains all parts; ``predict`` runs them."""

    def __init__(self, config: DetectorConfig = DetectorConfig(), device="cpu"):
        self.config = config
        self.device = device
        self.cnn = RegionCNN(tuple(config.cnn_widths))
        self.feature_mean = self.feature_scale = None
        self.svm_coef = self.svm_intercept = None
        self.platt = None  # (a, b): probability = sigmoid(a * margin + b)
        self.ridge_coef = self.ridge_intercept = None

    # --- training ---------------------------------------------------------------------
    def fit(self, samples: list[Sample], seed: int = 0, on_epoch=None) -> "RCNN":
        """Train the CNN, SVM, calibration and box regression on ``samples``."""
        rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        regions, best_iou, targets = self._training_regions(samples, rng)
        self._fit_cnn(regions, best_iou, rng, on_epoch)
        features = self._features(regions)
        self.feature_mean = features.mean(axis=0)
        self.feature_scale = features.std(axis=0) + 1e-6
        scaled = (features - self.feature_mean) / self.feature_scale
        self._fit_svm(scaled, best_iou, rng)
        self._fit_platt(scaled, best_iou)
        self._fit_ridge(scaled, best_iou, targets)
        return self

    def _training_regions(self, samples, rng):
        """Warped regions of every sample with their best IoU to a label box and that box."""
        c = self.config
        warped, ious, targets = [], [], []
        for sample in samples:
            labels = np.asarray(sample.boxes, np.float64).reshape(-1, 4)
            candidates = [np.asarray(sample.proposals, np.float64).reshape(-1, 4), labels, _jitter(labels, rng, 4)]
            candidates.append(_random_boxes(sample.rgb.shape, labels, rng, 8))
            boxes = np.concatenate(candidates)
            boxes = boxes[(boxes[:, 2] - boxes[:, 0] >= 2) & (boxes[:, 3] - boxes[:, 1] >= 2)]
            if len(labels):
                overlap = box_iou(boxes, labels)
                best, which = overlap.max(axis=1), overlap.argmax(axis=1)
                target = labels[which]
            else:
                best, target = np.zeros(len(boxes)), boxes.copy()
            boxes, best, target = _cap_regions(boxes, best, target, c.max_regions_per_image, c.fg_iou, rng)
            warped.append(warp_regions(sample.rgb, boxes, c.warp, c.context))
            ious.append(best)
            targets.append(np.column_stack([boxes, target]))
        return np.concatenate(warped), np.concatenate(ious), np.concatenate(targets)

    def _fit_cnn(self, regions, best_iou, rng, on_epoch):
        c = self.config
        positives = np.flatnonzero(best_iou >= c.fg_iou)
        negatives = np.flatnonzero(best_iou < c.fg_iou)
        if not len(positives) or not len(negatives):
            raise ValueError("training needs both positive and negative regions")
        self.cnn.to(self.device).train()
        optimizer = torch.optim.Adam(self.cnn.parameters(), lr=c.lr)
        for epoch in range(c.epochs):
            lr = c.lr * (c.lr_min / c.lr) ** (epoch / max(1, c.epochs - 1))
            for group in optimizer.param_groups:
                group["lr"] = lr
            losses = []
            for _ in range(c.batches_per_epoch):
                index = np.concatenate([rng.choice(positives, c.positives_per_batch),
                                        rng.choice(negatives, c.negatives_per_batch)])
                labels = np.r_[np.ones(c.positives_per_batch), np.zeros(c.negatives_per_batch)].astype(np.int64)
                batch = np.stack([_augment(regions[i], rng) for i in index])
                loss = torch.nn.functional.cross_entropy(self.cnn(to_tensor(batch, self.device)),
                                                         torch.from_numpy(labels).to(self.device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
            if on_epoch:
                on_epoch(epoch + 1, c.epochs, float(np.mean(losses)))
        self.cnn.eval()

    def _fit_svm(self, features, best_iou, rng):
        """Label-box-like regions vs clear negatives, with a few rounds of hard-negative mining."""
        c = self.config
        positives = features[best_iou >= 0.999]  # the label boxes themselves, as in the paper
        negatives = features[best_iou < c.svm_negative_iou]
        active = rng.permutation(len(negatives))[: max(4 * len(positives), 1000)]
        svm = LinearSVC(C=c.svm_c, class_weight="balanced", max_iter=5000)
        for round_ in range(c.hard_negative_rounds + 1):
            x = np.concatenate([positives, negatives[active]])
            y = np.r_[np.ones(len(positives)), np.zeros(len(active))]
            svm.fit(x, y)
            if round_ == c.hard_negative_rounds:
                break
            hard = np.flatnonzero(svm.decision_function(negatives) > -1.0)
            grown = np.union1d(active, hard)
            if len(grown) == len(active):
                break
            active = grown
        self.svm_coef, self.svm_intercept = svm.coef_[0].astype(np.float64), float(svm.intercept_[0])

    def _fit_platt(self, features, best_iou):
        c = self.config
        keep = (best_iou >= c.fg_iou) | (best_iou < c.svm_negative_iou)
        margins = self._margin(features[keep])[:, None]
        calibrator = LogisticRegression(C=1e4).fit(margins, (best_iou[keep] >= c.fg_iou).astype(int))
        self.platt = (float(calibrator.coef_[0, 0]), float(calibrator.intercept_[0]))

    def _fit_ridge(self, features, best_iou, targets):
        pairs = best_iou > self.config.bbox_iou
        ridge = Ridge(alpha=self.config.ridge_lambda)
        if pairs.sum() < 2:
            self.ridge_coef, self.ridge_intercept = np.zeros((4, features.shape[1])), np.zeros(4)
            return
        ridge.fit(features[pairs], encode_boxes(targets[pairs, :4], targets[pairs, 4:]))
        self.ridge_coef, self.ridge_intercept = ridge.coef_.astype(np.float64), ridge.intercept_.astype(np.float64)

    # --- inference --------------------------------------------------------------------
    def predict(self, rgb: np.ndarray, proposals: np.ndarray, batch_size: int = 256):
        """(boxes (N, 4), scores (N,)) after box regression and NMS, best first; scores in [0, 1]."""
        proposals = np.asarray(proposals, np.float64).reshape(-1, 4)
        if not len(proposals):
            return np.zeros((0, 4)), np.zeros(0)
        c = self.config
        features = self._features(warp_regions(rgb, proposals, c.warp, c.context), batch_size)
        scaled = (features - self.feature_mean) / self.feature_scale
        scores = self.calibrated(self._margin(scaled))
        boxes = decode_boxes(proposals, scaled @ self.ridge_coef.T + self.ridge_intercept)
        keep = nms(boxes, scores, c.nms_iou)
        return boxes[keep], scores[keep]

    def calibrated(self, margins: np.ndarray) -> np.ndarray:
        a, b = self.platt
        return 1.0 / (1.0 + np.exp(-(a * margins + b)))

    def _margin(self, scaled: np.ndarray) -> np.ndarray:
        return scaled @ self.svm_coef + self.svm_intercept

    @torch.no_grad()
    def _features(self, regions: np.ndarray, batch_size: int = 256) -> np.ndarray:
        self.cnn.to(self.device).eval()
        chunks = [self.cnn.features(to_tensor(regions[i : i + batch_size], self.device)).float().cpu().numpy()
                  for i in range(0, len(regions), batch_size)]
        return np.concatenate(chunks).astype(np.float64) if chunks else np.zeros((0, self.cnn.feature_dim))

    # --- persistence ------------------------------------------------------------------
    def state(self) -> dict:
        arrays = {
            "feature_mean": self.feature_mean, "feature_scale": self.feature_scale,
            "svm_coef": self.svm_coef, "ridge_coef": self.ridge_coef, "ridge_intercept": self.ridge_intercept,
        }
        return {
            "config": plain(vars(self.config)),
            "cnn": {k: v.detach().cpu() for k, v in self.cnn.state_dict().items()},
            "arrays": {k: torch.from_numpy(np.asarray(v, np.float64)) for k, v in arrays.items()},
            "svm_intercept": self.svm_intercept,
            "platt": list(self.platt),
        }

    @classmethod
    def from_state(cls, state: dict, device="cpu") -> "RCNN":
        config = DetectorConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in state["config"].items()})
        model = cls(config, device)
        model.cnn.load_state_dict(state["cnn"])
        model.cnn.to(device).eval()
        for name, value in state["arrays"].items():
            setattr(model, name, value.numpy())
        model.svm_intercept = float(state["svm_intercept"])
        model.platt = tuple(state["platt"])
        return model


def _augment(region: np.ndarray, rng) -> np.ndarray:
    flipped, _ = dihedral(region, region[..., 0], rng)
    return stain_jitter(flipped, rng)


def _jitter(boxes: np.ndarray, rng, copies: int) -> np.ndarray:
    """Shifted and rescaled copies of label boxes: positives and near-misses for the CNN and regression."""
    if not len(boxes):
        return np.zeros((0, 4))
    repeated = np.repeat(boxes, copies, axis=0)
    w, h = repeated[:, 2] - repeated[:, 0], repeated[:, 3] - repeated[:, 1]
    shift = rng.uniform(-0.25, 0.25, (len(repeated), 2)) * np.column_stack([w, h])
    scale = np.exp(rng.uniform(-0.3, 0.3, (len(repeated), 2)))
    cx, cy = repeated[:, 0] + w / 2 + shift[:, 0], repeated[:, 1] + h / 2 + shift[:, 1]
    nw, nh = w * scale[:, 0], h * scale[:, 1]
    return np.column_stack([cx - nw / 2, cy - nh / 2, cx + nw / 2, cy + nh / 2])


def _random_boxes(shape, labels: np.ndarray, rng, count: int) -> np.ndarray:
    """Background regions of label-box size anywhere in the image (easy negatives)."""
    height, width = shape[:2]
    side = np.median(labels[:, 2] - labels[:, 0]) if len(labels) else min(height, width) / 8
    side = float(min(side, height, width))
    x0 = rng.uniform(0, max(1e-6, width - side), count)
    y0 = rng.uniform(0, max(1e-6, height - side), count)
    return np.column_stack([x0, y0, x0 + side, y0 + side])


def _cap_regions(boxes, best, target, cap: int, fg_iou: float, rng):
    """All positives and at most ``cap`` regions in all, the rest of the room for sampled negatives."""
    positive = np.flatnonzero(best >= fg_iou)
    negative = np.flatnonzero(best < fg_iou)
    room = max(cap - len(positive), math.ceil(cap / 4))
    chosen = np.concatenate([positive, rng.permutation(negative)[:room]])
    return boxes[chosen], best[chosen], target[chosen]
