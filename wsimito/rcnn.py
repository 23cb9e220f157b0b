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
   threshold means the same across models. The calibration is fitted on
   margins the SVM gives images it was not trained on (k-fold over images),
   and on what detection scores: the proposals of an image after NMS, with
   proposals that the per-image cap on regions left out accounted for by
   weighting. Margins of the SVM's own training regions are far more
   confident than those of new images, and label boxes and jittered copies
   are far more often positive than proposals are;
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

from wsimito import devices
from wsimito.augment import dihedral, stain_jitter
from wsimito.config import DetectorConfig, plain
from wsimito.nets.cnn import RegionCNN
from wsimito.proposals import box_iou, nms
from wsimito.stain import normalize_stain
from wsimito.segmentation import normalize, to_tensor

# NMS also drops a box more than this share of which lies inside a better one (or that lies around a
# better one): with grouped proposals, the pieces of a figure and the whole figure are all proposed.
PIECE_OVERLAP = 0.7


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
        self.calibrated_on = None  # what the Platt scaling was fitted on (training report only)
        self.f1_threshold = None  # the calibrated score with the best F1 on the calibration images (report)
        self.ridge_coef = self.ridge_intercept = None

    # --- training ---------------------------------------------------------------------
    def fit(self, samples: list[Sample], seed: int = 0, on_epoch=None,
            calibration: list[Sample] | None = None, calibration_sources: list | None = None) -> "RCNN":
        """Train the CNN, SVM, calibration and box regression on ``samples``.

        ``calibration``: images like those detection will see, with the proposals detection would make,
        to fit the Platt scaling on. ``calibration_sources`` says, per calibration image, which of
        ``samples`` it is (None: held out from training). A training image's margins come from an SVM
        trained without it (k-fold over those images), so its own labels do not flatter it. Without
        calibration images, or when they hold no mitosis, the k-fold margins of all training images are
        used, which are optimistic: the CNN has seen those images, and so has the segmentation whose
        proposals there are fewer and easier than on new images.
        """
        rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        regions = self._training_regions(samples, rng)
        self._fit_cnn(regions.pixels, regions.best_iou, rng, on_epoch)
        features = self._features(regions.pixels)
        self.feature_mean = features.mean(axis=0)
        self.feature_scale = features.std(axis=0) + 1e-6
        scaled = (features - self.feature_mean) / self.feature_scale
        self.svm_coef, self.svm_intercept = self._fit_svm(scaled, regions.best_iou, rng)
        held_out = self._proposal_regions(calibration or [])
        held_out_scaled = self._scaled(held_out.pixels)
        margins = self._margin(held_out_scaled)
        sources = np.array([-1 if s is None else s for s in (calibration_sources or [None] * len(calibration or []))])
        if (sources >= 0).any():
            margins = self._cross_fitted_margins(margins, held_out_scaled, sources[held_out.image], scaled, regions,
                                                 rng)
        margins, labels, weights = self._detections(margins, held_out)
        self.calibrated_on = (f"{len(calibration or [])} images ({int((sources >= 0).sum())} of them training "
                              "images, k-fold margins)")
        truth = sum(len(np.asarray(sample.boxes).reshape(-1, 4)) for sample in calibration or [])
        if labels.sum() == 0 or labels.sum() == len(labels):
            margins, labels, weights = self._detections(self._held_out_margins(scaled, regions, rng), regions)
            self.calibrated_on = "k-fold margins of the training images"
            truth = None
        self._fit_platt(margins, labels, weights)
        self.f1_threshold = None if truth is None else _f1_best_threshold(self.calibrated(margins), labels, weights,
                                                                           truth)
        self._fit_ridge(scaled, regions.best_iou, regions.targets)
        return self

    def _training_regions(self, samples, rng) -> "_Regions":
        """Warped regions of every sample with their best IoU to a label box, that box, and bookkeeping."""
        c = self.config
        parts = []
        for index, sample in enumerate(samples):
            labels = np.asarray(sample.boxes, np.float64).reshape(-1, 4)
            proposals = np.asarray(sample.proposals, np.float64).reshape(-1, 4)
            candidates = [proposals, labels, _jitter(labels, rng, 4), _random_boxes(sample.rgb.shape, labels, rng, 8)]
            boxes = np.concatenate(candidates)
            is_proposal = np.arange(len(boxes)) < len(proposals)
            usable = (boxes[:, 2] - boxes[:, 0] >= 2) & (boxes[:, 3] - boxes[:, 1] >= 2)
            boxes, is_proposal = boxes[usable], is_proposal[usable]
            if len(labels):
                overlap = box_iou(boxes, labels)
                best, target = overlap.max(axis=1), labels[overlap.argmax(axis=1)]
            else:
                best, target = np.zeros(len(boxes)), boxes.copy()
            chosen, weight = _cap_regions(best, c.max_regions_per_image, c.fg_iou, rng)
            parts.append(_Regions(self.warp(sample.rgb, boxes[chosen]), best[chosen],
                                  np.column_stack([boxes[chosen], target[chosen]]), np.full(len(chosen), index),
                                  is_proposal[chosen], weight))
        return _Regions.concatenate(parts)

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

    def _fit_svm(self, features, best_iou, rng) -> tuple[np.ndarray, float]:
        """Label boxes vs clear negatives, with a few rounds of hard-negative mining: (coef, intercept)."""
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
        return svm.coef_[0].astype(np.float64), float(svm.intercept_[0])

    def _held_out_margins(self, features, regions: "_Regions", rng, folds: int = 3) -> np.ndarray:
        """SVM margin of every region from an SVM trained without its image (k-fold over images).

        With a single image there is nothing to hold out, and the final SVM's own margins are used.
        """
        images = np.unique(regions.image)
        fold_of = dict(zip(rng.permutation(images).tolist(), np.arange(len(images)) % max(1, folds)))
        fold = np.array([fold_of[i] for i in regions.image.tolist()])
        margins = self._margin(features)
        if len(images) < 2:
            return margins
        for k in range(min(folds, len(images))):
            inside = fold == k
            training = ~inside
            if not (regions.best_iou[training] >= 0.999).any() or not (
                    regions.best_iou[training] < self.config.svm_negative_iou).any():
                continue  # the other folds lack a class: keep the final SVM's margins for this fold
            coef, intercept = self._fit_svm(features[training], regions.best_iou[training], rng)
            margins[inside] = features[inside] @ coef + intercept
        return margins

    def _cross_fitted_margins(self, margins, features, owners, train_features, regions: "_Regions", rng,
                              folds: int = 3) -> np.ndarray:
        """``margins`` with those of regions from training image ``owners`` (-1: not one) replaced by the
        margins of an SVM trained without that image's fold."""
        margins = margins.copy()
        images = np.unique(owners[owners >= 0])
        fold_of = np.arange(len(images)) % folds
        images = rng.permutation(images)
        for k in range(min(folds, len(images))):
            left_out = images[fold_of == k]
            training = ~np.isin(regions.image, left_out)
            if not (regions.best_iou[training] >= 0.999).any() or not (
                    regions.best_iou[training] < self.config.svm_negative_iou).any():
                continue  # the other folds lack a class: keep the final SVM's margins for this fold
            coef, intercept = self._fit_svm(train_features[training], regions.best_iou[training], rng)
            inside = np.isin(owners, left_out)
            margins[inside] = features[inside] @ coef + intercept
        return margins

    def _proposal_regions(self, samples: list[Sample]) -> "_Regions":
        """Every proposal of ``samples``, warped, with its best IoU and label box (no sampling, weight 1)."""
        c = self.config
        parts = []
        for index, sample in enumerate(samples):
            labels = np.asarray(sample.boxes, np.float64).reshape(-1, 4)
            boxes = np.asarray(sample.proposals, np.float64).reshape(-1, 4)
            if not len(boxes):
                continue
            overlap = box_iou(boxes, labels) if len(labels) else np.zeros((len(boxes), 1))
            target = labels[overlap.argmax(axis=1)] if len(labels) else boxes
            parts.append(_Regions(self.warp(sample.rgb, boxes), overlap.max(axis=1),
                                  np.column_stack([boxes, target]), np.full(len(boxes), index),
                                  np.ones(len(boxes), bool), np.ones(len(boxes))))
        return _Regions.concatenate(parts) if parts else _Regions.empty(c.warp)

    def _detections(self, margins: np.ndarray, regions: "_Regions"):
        """(margins, labels, weights) of what detection would report: each image's proposals after NMS,
        labelled as evaluation counts them. Each label box makes one detection positive (the best one whose
        centre lies in it); the rest, duplicates included, are negatives. A negative's weight is how many
        proposals it stands for where the per-image cap sampled them."""
        c = self.config
        kept, labels = [], []
        for image in np.unique(regions.image):
            index = np.flatnonzero((regions.image == image) & regions.is_proposal)
            if not len(index):
                continue
            index = index[nms(regions.targets[index, :4], margins[index], c.nms_iou, PIECE_OVERLAP)]
            kept.append(index)
            labels.append(_one_per_label(regions.targets[index], margins[index]))
        kept = np.concatenate(kept) if kept else np.zeros(0, np.intp)
        labels = np.concatenate(labels) if labels else np.zeros(0, int)
        return margins[kept], labels, np.where(labels == 1, 1.0, regions.weight[kept])

    def _fit_platt(self, margins: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> None:
        """Logistic regression of "is a correct detection" on the SVM margin (Platt scaling).

        With Platt's (1999) targets, (N+ + 1) / (N+ + 2) for positives and 1 / (N- + 2) for negatives,
        rather than 1 and 0: a few held-out images are often separated perfectly, and plain 0/1 targets
        then give an infinitely steep curve whose 0.5 point is anywhere in the gap.
        """
        if len(np.unique(labels)) < 2:  # nothing to calibrate against: the SVM's own scale
            self.platt = (1.0, 0.0)
            return
        n_pos, n_neg = weights[labels == 1].sum(), weights[labels == 0].sum()
        target = np.where(labels == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
        # soft targets as each sample counted twice: positive with weight t, negative with weight 1 - t
        x = np.concatenate([margins, margins])[:, None]
        y = np.r_[np.ones(len(margins)), np.zeros(len(margins))]
        calibrator = LogisticRegression(C=1e4).fit(x, y, sample_weight=np.r_[weights * target, weights * (1 - target)])
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
    def warp(self, rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """The regions the CNN sees: ``boxes`` of the image in the reference staining (if configured),
        warped with context. A tile without proposals is not normalised (that costs tens of ms per tile)."""
        if len(boxes):
            rgb = normalize_stain(rgb, self.config.stain_normalization)
        return warp_regions(rgb, boxes, self.config.warp, self.config.context)

    def predict(self, rgb: np.ndarray, proposals: np.ndarray, batch_size: int = 256):
        """(boxes (N, 4), scores (N,)) after box regression and NMS, best first; scores in [0, 1]."""
        return self.predict_many([rgb], [proposals], batch_size)[0]

    def predict_many(self, rgbs, proposals, batch_size: int = 256) -> list[tuple[np.ndarray, np.ndarray]]:
        """``predict`` for each image and its proposals, with the regions of all images through the CNN together:
        one copy to the device and one back for a whole batch of tiles."""
        c = self.config
        proposals = [np.asarray(p, np.float64).reshape(-1, 4) for p in proposals]
        regions = [self.warp(rgb, p) for rgb, p in zip(rgbs, proposals)]
        scaled = self._scaled(np.concatenate(regions), batch_size)
        results = []
        for boxes, features in zip(proposals, np.split(scaled, np.cumsum([len(p) for p in proposals])[:-1])):
            if not len(boxes):
                results.append((np.zeros((0, 4)), np.zeros(0)))
                continue
            scores = self.calibrated(self._margin(features))
            boxes = decode_boxes(boxes, features @ self.ridge_coef.T + self.ridge_intercept)  # refined
            keep = nms(boxes, scores, c.nms_iou, PIECE_OVERLAP)
            results.append((boxes[keep], scores[keep]))
        return results

    def calibrated(self, margins: np.ndarray) -> np.ndarray:
        a, b = self.platt
        return 1.0 / (1.0 + np.exp(-(a * margins + b)))

    def _scaled(self, regions: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Standardised CNN features of warped regions, what the SVM and the box regression see."""
        return (self._features(regions, batch_size) - self.feature_mean) / self.feature_scale

    def _margin(self, scaled: np.ndarray) -> np.ndarray:
        return scaled @ self.svm_coef + self.svm_intercept

    @torch.no_grad()
    def _features(self, regions: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """CNN features (float64) of uint8 regions: one copy of all of them to the device, one copy back.

        In fp32 on every device, unlike the segmentation net: the SVM, its calibration and the box regression
        were fitted on fp32 features, and this CNN's share of the work is small.
        """
        if not len(regions):
            return np.zeros((0, self.cnn.feature_dim))
        cnn = devices.place(self.cnn, self.device)
        pixels = devices.to_device(regions, self.device)
        chunks = [cnn.features(normalize(pixels[i : i + batch_size])) for i in range(0, len(pixels), batch_size)]
        return torch.cat(chunks).float().cpu().numpy().astype(np.float64)

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


def _f1_best_threshold(scores, labels, weights, truth: int) -> float | None:
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


def _one_per_label(targets: np.ndarray, scores: np.ndarray) -> np.ndarray:
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


def _cap_regions(best, cap: int, fg_iou: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """Indices of all positives and sampled negatives, and each one's weight (how many it stands for).

    Negatives get the room the positives leave and at least half the cap: an image crowded with mitoses
    must still show the CNN and the SVM its look-alikes.
    """
    positive = np.flatnonzero(best >= fg_iou)
    negative = np.flatnonzero(best < fg_iou)
    room = min(len(negative), max(cap - len(positive), math.ceil(cap / 2)))
    chosen = np.concatenate([positive, rng.permutation(negative)[:room]])
    weight = np.ones(len(chosen))
    weight[len(positive):] = len(negative) / max(room, 1)
    return chosen, weight


@dataclass
class _Regions:
    """The warped training regions and, per region, what training needs to know about it."""

    pixels: np.ndarray  # (N, warp, warp, 3) uint8
    best_iou: np.ndarray  # (N,) best IoU with a label box of its image
    targets: np.ndarray  # (N, 8): the region's box, then that label box
    image: np.ndarray  # (N,) index of its sample
    is_proposal: np.ndarray  # (N,) bool: a proposal (what detection scores), not a label, jitter or random box
    weight: np.ndarray  # (N,) how many regions of its kind in its image it stands for (sampling)

    @classmethod
    def empty(cls, warp: int) -> "_Regions":
        return cls(np.zeros((0, warp, warp, 3), np.uint8), np.zeros(0), np.zeros((0, 8)), np.zeros(0, int),
                   np.zeros(0, bool), np.zeros(0))

    @classmethod
    def concatenate(cls, parts: list["_Regions"]) -> "_Regions":
        if not parts:
            raise ValueError("training needs at least one image")
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                     ("pixels", "best_iou", "targets", "image", "is_proposal", "weight")))
