"""R-CNN for mitoses (Girshick et al. 2014): warp regions, CNN features, linear SVM, box regression.

Follows scikit-learn's estimator conventions: ``RCNN(config).fit(samples)``
returns the estimator, fitted parameters end in ``_``, and ``predict`` before
``fit`` raises ``NotFittedError``. Training, as in the paper:

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

import numpy as np
import torch
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import Ridge
from sklearn.svm import LinearSVC

from wsimito import devices
from wsimito.augment import dihedral, half_resolution, stain_jitter
from wsimito.background import background_level, relative_scores
from wsimito.boxes import box_iou, decode_boxes, encode_boxes, nms, warp_regions, window_regions
from wsimito.calibration import (
    LABEL_BOX_IOU,
    cross_fitted_margins,
    f1_best_threshold,
    fit_platt,
    held_out_margins,
    label_detections,
    platt_probability,
)
from wsimito.config import DetectorConfig, plain
from wsimito.nets.cnn import RegionCNN
from wsimito.nets.inputs import normalize, to_tensor
from wsimito.stain import StainFit, apply_stain, normalize_stain

# NMS also drops a box more than this share of which lies inside a better one (or that lies around a
# better one): with grouped proposals, the pieces of a figure and the whole figure are all proposed.
PIECE_OVERLAP = 0.7


def suppressed(boxes: np.ndarray, scores: np.ndarray, nms_iou: float) -> tuple[np.ndarray, np.ndarray]:
    """The detections NMS keeps (boxes, scores), best first."""
    keep = nms(boxes, scores, nms_iou, PIECE_OVERLAP)
    return boxes[keep], scores[keep]


@dataclass
class Sample:
    """One training image at the model mpp, its label boxes and its proposals (pixels)."""

    rgb: np.ndarray
    boxes: np.ndarray  # (K, 4) label boxes
    proposals: np.ndarray  # (P, 4)
    whole_field: bool = False  # a field as detection sees it (not a crop centred on a mitosis)


class RCNN:
    """Scores and refines mitosis proposals. ``fit`` trains all parts; ``predict`` runs them."""

    def __init__(self, config: DetectorConfig = DetectorConfig(), device="cpu"):
        self.config = config
        self.device = device
        self.cnn = RegionCNN(tuple(config.cnn_widths))
        self.feature_mean_ = self.feature_scale_ = None
        self.svm_coef_ = self.svm_intercept_ = None
        self.platt_ = None  # (a, b): probability = sigmoid(a * margin + b)
        self.calibrated_on_ = None  # what the Platt scaling was fitted on (training report only)
        self.f1_threshold_ = None  # the calibrated score with the best F1 on the calibration images (report)
        self.background_level_ = None  # with background_quantile: the calibration images' level (logit)
        self.ridge_coef_ = self.ridge_intercept_ = None

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
        c = self.config
        # initial weights from the seed alone, not from whatever drew random numbers before in this process: a
        # fold, a final model or an ensemble's member trains the same wherever it runs
        self.cnn = RegionCNN(tuple(c.cnn_widths))
        self.f1_threshold_ = self.background_level_ = None  # a refit keeps nothing of the last fit
        regions = self._training_regions(samples, rng)
        fields = np.array([sample.whole_field for sample in samples])
        self._fit_cnn(regions, fields, rng, on_epoch, c.epochs, c.lr)
        for _ in range(c.mining_rounds):
            regions = _Regions.concatenate([regions, self._hard_negatives(samples)])
            self._fit_cnn(regions, fields, rng, on_epoch, max(1, c.epochs // 2), c.lr / 10, hard=True)
        features = self._features(regions.pixels)
        self.feature_mean_ = features.mean(axis=0)
        self.feature_scale_ = features.std(axis=0) + 1e-6
        scaled = (features - self.feature_mean_) / self.feature_scale_
        if c.head == "softmax":
            self.svm_coef_, self.svm_intercept_ = self._softmax_as_linear()
        else:
            self.svm_coef_, self.svm_intercept_ = self._fit_svm(scaled, regions.best_iou, rng)
        held_out = self._proposal_regions(calibration or [])
        held_out_scaled = self._scaled(held_out.pixels, tta=c.tta)
        margins = self._margin(held_out_scaled)
        sources = np.array([-1 if s is None else s for s in (calibration_sources or [None] * len(calibration or []))])
        if (sources >= 0).any() and c.head == "svm":
            margins = cross_fitted_margins(margins, held_out_scaled, sources[held_out.image], scaled,
                                           regions.best_iou, regions.image, self._fit_svm,
                                           self.config.svm_negative_iou, rng)
        margins, labels, weights, images = self._detections(margins, held_out)
        self.calibrated_on_ = (f"{len(calibration or [])} images ({int((sources >= 0).sum())} of them training "
                              "images, k-fold margins)")
        truth = sum(len(np.asarray(sample.boxes).reshape(-1, 4)) for sample in calibration or [])
        if labels.sum() == 0 or labels.sum() == len(labels):
            margins = self._margin(scaled) if c.head == "softmax" else held_out_margins(
                self._margin(scaled), scaled, regions.best_iou, regions.image, self._fit_svm, c.svm_negative_iou, rng)
            margins, labels, weights, images = self._detections(margins, regions)
            self.calibrated_on_ = "k-fold margins of the training images"
            truth = None
        self.platt_ = fit_platt(margins, labels, weights)
        scores = self._fit_background(self.calibrated(margins), weights, images)
        self.f1_threshold_ = None if truth is None else f1_best_threshold(scores, labels, weights, truth)
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
            chosen, weight = _cap_regions(best, self._cap(sample.rgb), c.fg_iou, rng)
            parts.append(_Regions(self.warp(sample.rgb, boxes[chosen]), best[chosen],
                                  np.column_stack([boxes[chosen], target[chosen]]), np.full(len(chosen), index),
                                  is_proposal[chosen], weight, np.zeros(len(chosen), bool)))
        return _Regions.concatenate(parts)

    def _fit_cnn(self, regions: "_Regions", fields: np.ndarray, rng, on_epoch, epochs: int, lr_start: float,
                 hard: bool = False):
        """Minibatches of positives and negatives, learning rate decayed to ``lr_min``; with ``hard``, half of
        each batch's negatives are mined ones (the rest still show every kind of background). ``fields``: per
        sample, whether it is a whole field, whose regions fill ``field_*_share`` of each batch."""
        c = self.config
        positive = regions.best_iou >= c.fg_iou
        on_field = fields[regions.image]
        positives = _Pool(np.flatnonzero(positive), np.flatnonzero(positive & on_field), c.field_positive_share)
        negatives = _Pool(np.flatnonzero(~positive), np.flatnonzero(~positive & on_field), c.field_negative_share)
        mined = np.flatnonzero(regions.mined) if hard else np.zeros(0, np.intp)
        if not len(positives.every) or not len(negatives.every):
            raise ValueError("training needs both positive and negative regions")
        n_mined = c.negatives_per_batch // 2 if len(mined) else 0
        self.cnn.to(self.device).train()
        optimizer = torch.optim.Adam(self.cnn.parameters(), lr=lr_start)
        for epoch in range(epochs):
            lr = lr_start * (c.lr_min / lr_start) ** (epoch / max(1, epochs - 1))
            for group in optimizer.param_groups:
                group["lr"] = lr
            losses = []
            for _ in range(c.batches_per_epoch):
                index = np.concatenate([positives.draw(c.positives_per_batch, rng),
                                        negatives.draw(c.negatives_per_batch - n_mined, rng),
                                        rng.choice(mined, n_mined) if n_mined else np.zeros(0, np.intp)])
                labels = np.r_[np.ones(c.positives_per_batch), np.zeros(c.negatives_per_batch)].astype(np.int64)
                batch = np.stack([_augment(regions.pixels[i], rng, c) for i in index])
                loss = torch.nn.functional.cross_entropy(self.cnn(to_tensor(batch, self.device)),
                                                         torch.from_numpy(labels).to(self.device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
            if on_epoch:
                on_epoch(epoch + 1, epochs, float(np.mean(losses)))
        self.cnn.eval()

    @torch.no_grad()
    def _hard_negatives(self, samples: list[Sample]) -> "_Regions":
        """Each image's proposals that lie clear of every label box and that the CNN scores highest (its
        area's share of the region cap): the dark nuclei it mistakes for mitoses, shown again."""
        c = self.config
        self.cnn.eval()
        parts = []
        for index, sample in enumerate(samples):
            labels = np.asarray(sample.boxes, np.float64).reshape(-1, 4)
            boxes = np.asarray(sample.proposals, np.float64).reshape(-1, 4)
            if len(labels) and len(boxes):
                boxes = boxes[box_iou(boxes, labels).max(axis=1) < c.svm_negative_iou]
            if not len(boxes):
                continue
            pixels = self.warp(sample.rgb, boxes)
            logits = self.cnn(to_tensor(pixels, self.device)).float()
            scores = torch.softmax(logits, 1)[:, 1].cpu().numpy()
            worst = np.argsort(-scores, kind="stable")[: math.ceil(self._cap(sample.rgb) / 2)]
            parts.append(_Regions(pixels[worst], np.zeros(len(worst)), np.column_stack([boxes[worst], boxes[worst]]),
                                  np.full(len(worst), index), np.zeros(len(worst), bool), np.ones(len(worst)),
                                  np.ones(len(worst), bool)))
        return _Regions.concatenate(parts) if parts else _Regions.empty(c.warp)

    def _cap(self, rgb: np.ndarray) -> int:
        """Regions kept per training image: ``max_regions_per_image``, per ``cap_tile_px``² of it if set."""
        c = self.config
        if c.cap_tile_px <= 0:
            return c.max_regions_per_image
        tiles = rgb.shape[0] * rgb.shape[1] / c.cap_tile_px**2
        return max(c.max_regions_per_image, round(c.max_regions_per_image * tiles))

    def _softmax_as_linear(self) -> tuple[np.ndarray, float]:
        """The CNN's own classifier as (coef, intercept) on standardised features: its logit difference."""
        weight = self.cnn.head.weight.detach().cpu().double().numpy()
        bias = self.cnn.head.bias.detach().cpu().double().numpy()
        direction, offset = weight[1] - weight[0], bias[1] - bias[0]
        return direction * self.feature_scale_, float(offset + direction @ self.feature_mean_)

    def _fit_svm(self, features, best_iou, rng) -> tuple[np.ndarray, float]:
        """Label boxes vs clear negatives, with a few rounds of hard-negative mining: (coef, intercept)."""
        c = self.config
        positives = features[best_iou >= LABEL_BOX_IOU]  # the label boxes themselves, as in the paper
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
                                  np.ones(len(boxes), bool), np.ones(len(boxes)), np.zeros(len(boxes), bool)))
        return _Regions.concatenate(parts) if parts else _Regions.empty(c.warp)

    def _fit_background(self, scores: np.ndarray, weights: np.ndarray, images: np.ndarray) -> np.ndarray:
        """With ``background_quantile``, the calibration images' background level (their mean, weighted by
        candidates) and their scores relative to it, which the threshold is chosen on; else ``scores``."""
        quantile = self.config.background_quantile
        if not quantile or not len(scores):
            return scores
        owners = [images == image for image in np.unique(images)]
        levels = [background_level(scores[own], quantile, weights[own]) for own in owners]
        self.background_level_ = float(np.average(levels, weights=[weights[own].sum() for own in owners]))
        relative = scores.copy()
        for own in owners:
            relative[own] = relative_scores(scores[own], quantile, self.background_level_, weights[own])
        return relative

    def relative(self, scores: np.ndarray) -> np.ndarray:
        """One image's (or slide's) candidate scores relative to its background (``background_quantile``,
        wsimito.background), or as they are (also when calibration left no candidates to fit a level on)."""
        if not self.config.background_quantile or self.background_level_ is None:
            return scores
        return relative_scores(scores, self.config.background_quantile, self.background_level_)

    def _detections(self, margins: np.ndarray, regions: "_Regions"):
        """(margins, labels, weights, images) of what detection would report: each image's proposals after NMS,
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
            labels.append(label_detections(regions.targets[index], margins[index]))
        kept = np.concatenate(kept) if kept else np.zeros(0, np.intp)
        labels = np.concatenate(labels) if labels else np.zeros(0, int)
        return margins[kept], labels, np.where(labels == 1, 1.0, regions.weight[kept]), regions.image[kept]

    def _fit_ridge(self, features, best_iou, targets):
        pairs = best_iou > self.config.bbox_iou
        ridge = Ridge(alpha=self.config.ridge_lambda)
        if pairs.sum() < 2:
            self.ridge_coef_, self.ridge_intercept_ = np.zeros((4, features.shape[1])), np.zeros(4)
            return
        ridge.fit(features[pairs], encode_boxes(targets[pairs, :4], targets[pairs, 4:]))
        self.ridge_coef_, self.ridge_intercept_ = ridge.coef_.astype(np.float64), ridge.intercept_.astype(np.float64)

    # --- inference --------------------------------------------------------------------
    def warp(self, rgb: np.ndarray, boxes: np.ndarray, stain: StainFit | None = None) -> np.ndarray:
        """The regions the CNN sees: ``boxes`` of the image in the reference staining (if configured; by
        ``stain``, the slide's, when given, else estimated from ``rgb``), warped with context, or with
        ``window`` the square around each box's centre at true size. A tile without proposals is not
        normalised (that costs tens of ms per tile)."""
        if len(boxes) and stain is not None and self.config.stain_normalization != "none":
            rgb = apply_stain(rgb, stain)
        elif len(boxes):
            rgb = normalize_stain(rgb, self.config.stain_normalization)
        if self.config.window:
            return window_regions(rgb, boxes, self.config.warp, self.config.window)
        return warp_regions(rgb, boxes, self.config.warp, self.config.context)

    def predict(self, rgb: np.ndarray, proposals: np.ndarray, batch_size: int = 256):
        """(boxes (N, 4), scores (N,)) after box regression and NMS, best first; scores in [0, 1]."""
        return self.predict_many([rgb], [proposals], batch_size)[0]

    def predict_many(self, rgbs, proposals, batch_size: int = 256, stain: StainFit | None = None
                     ) -> list[tuple[np.ndarray, np.ndarray]]:
        """``predict`` for each image and its proposals, with the regions of all images through the CNN together:
        one copy to the device and one back for a whole batch of tiles. ``stain``: the slide's staining."""
        return [suppressed(boxes, scores, self.config.nms_iou)
                for boxes, scores in self.score_many(rgbs, proposals, batch_size, stain)]

    def score_many(self, rgbs, proposals, batch_size: int = 256, stain: StainFit | None = None
                   ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per image, every proposal refined by the box regression and its calibrated score, before NMS (what
        an ensemble averages)."""
        self._check_fitted()
        proposals = [np.asarray(p, np.float64).reshape(-1, 4) for p in proposals]
        return self.score_warped([self.warp(rgb, p, stain) for rgb, p in zip(rgbs, proposals)], proposals, batch_size)

    def score_warped(self, regions: list[np.ndarray], proposals: list[np.ndarray], batch_size: int = 256
                     ) -> list[tuple[np.ndarray, np.ndarray]]:
        """``score_many`` of regions already warped, per image (``warp``): an ensemble warps once for all."""
        self._check_fitted()
        scaled = self._scaled(np.concatenate(regions), batch_size, tta=self.config.tta)
        return [(decode_boxes(boxes, features @ self.ridge_coef_.T + self.ridge_intercept_),
                 self.calibrated(self._margin(features)))
                for boxes, features in zip(proposals, np.split(scaled, np.cumsum([len(p) for p in proposals])[:-1]))]

    def calibrated(self, margins: np.ndarray) -> np.ndarray:
        return platt_probability(margins, self.platt_)

    def _scaled(self, regions: np.ndarray, batch_size: int = 256, tta: bool = False) -> np.ndarray:
        """Standardised CNN features of warped regions, what the SVM and the box regression see; with ``tta``
        the mean over the region's 8 flips and rotations (a mitosis has no orientation)."""
        return (self._features(regions, batch_size, tta) - self.feature_mean_) / self.feature_scale_

    def _margin(self, scaled: np.ndarray) -> np.ndarray:
        return scaled @ self.svm_coef_ + self.svm_intercept_

    @torch.no_grad()
    def _features(self, regions: np.ndarray, batch_size: int = 256, tta: bool = False) -> np.ndarray:
        """CNN features (float64) of uint8 regions: one copy of all of them to the device, one copy back.

        In fp32 on every device, unlike the segmentation net: the SVM, its calibration and the box regression
        were fitted on fp32 features, and this CNN's share of the work is small.
        """
        if not len(regions):
            return np.zeros((0, self.cnn.feature_dim))
        cnn = devices.place(self.cnn, self.device)
        pixels = devices.to_device(regions, self.device)
        views = _dihedral_views if tta else (lambda x: [x])
        chunks = [torch.stack([cnn.features(view) for view in views(normalize(pixels[i : i + batch_size]))]).mean(0)
                  for i in range(0, len(pixels), batch_size)]
        return torch.cat(chunks).float().cpu().numpy().astype(np.float64)

    def _check_fitted(self) -> None:
        if self.platt_ is None or self.svm_coef_ is None:
            raise NotFittedError("this RCNN is not fitted yet: call fit(samples) or load a trained bundle")

    # --- persistence ------------------------------------------------------------------
    def state(self) -> dict:
        """The fitted parameters as tensors and plain numbers (the keys are the saved format: they never change)."""
        self._check_fitted()
        arrays = {
            "feature_mean": self.feature_mean_, "feature_scale": self.feature_scale_,
            "svm_coef": self.svm_coef_, "ridge_coef": self.ridge_coef_, "ridge_intercept": self.ridge_intercept_,
        }
        return {
            "config": plain(vars(self.config)),
            "cnn": {k: v.detach().cpu() for k, v in self.cnn.state_dict().items()},
            "arrays": {k: torch.from_numpy(np.asarray(v, np.float64)) for k, v in arrays.items()},
            "svm_intercept": self.svm_intercept_,
            "platt": list(self.platt_),
            **({} if self.background_level_ is None else {"background_level": self.background_level_}),
        }

    @classmethod
    def from_state(cls, state: dict, device="cpu") -> "RCNN":
        config = DetectorConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in state["config"].items()})
        model = cls(config, device)
        model.cnn.load_state_dict(state["cnn"])
        model.cnn.to(device).eval()
        for name, value in state["arrays"].items():
            setattr(model, name + "_", value.numpy())
        model.svm_intercept_ = float(state["svm_intercept"])
        model.platt_ = tuple(state["platt"])
        model.background_level_ = state.get("background_level")  # absent: fitted without background_quantile
        return model


def _augment(region: np.ndarray, rng, config: DetectorConfig) -> np.ndarray:
    flipped, _ = dihedral(region, region[..., 0], rng)
    return stain_jitter(half_resolution(flipped, rng, config.half_resolution), rng, config.stain_sigma,
                        config.brightness)


def _dihedral_views(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 rotations and flips of a batch (N, C, H, W)."""
    rotations = [torch.rot90(x, k, dims=(2, 3)) for k in range(4)]
    return rotations + [torch.flip(r, dims=(3,)) for r in rotations]


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
class _Pool:
    """Indices of one kind of region, and the share of each draw that comes from its whole-field part: crops
    centred on mitoses far outnumber fields, but only fields show the look-alikes detection meets."""

    every: np.ndarray
    on_fields: np.ndarray
    field_share: float

    def draw(self, count: int, rng) -> np.ndarray:
        from_fields = round(count * self.field_share) if len(self.on_fields) else 0
        return np.concatenate([rng.choice(self.every, count - from_fields),
                               rng.choice(self.on_fields, from_fields) if from_fields else np.zeros(0, np.intp)])


@dataclass
class _Regions:
    """The warped training regions and, per region, what training needs to know about it."""

    pixels: np.ndarray  # (N, warp, warp, 3) uint8
    best_iou: np.ndarray  # (N,) best IoU with a label box of its image
    targets: np.ndarray  # (N, 8): the region's box, then that label box
    image: np.ndarray  # (N,) index of its sample
    is_proposal: np.ndarray  # (N,) bool: a proposal (what detection scores), not a label, jitter or random box
    weight: np.ndarray  # (N,) how many regions of its kind in its image it stands for (sampling)
    mined: np.ndarray  # (N,) bool: a hard negative added by a mining round

    @classmethod
    def empty(cls, warp: int) -> "_Regions":
        return cls(np.zeros((0, warp, warp, 3), np.uint8), np.zeros(0), np.zeros((0, 8)), np.zeros(0, int),
                   np.zeros(0, bool), np.zeros(0), np.zeros(0, bool))

    @classmethod
    def concatenate(cls, parts: list["_Regions"]) -> "_Regions":
        if not parts:
            raise ValueError("training needs at least one image")
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                     ("pixels", "best_iou", "targets", "image", "is_proposal", "weight", "mined")))
