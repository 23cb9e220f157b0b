"""Phase 2 training: the R-CNN on boxes from phase 1, validated by F1 at a radius in µm.

Images are split by image into training and validation. Proposals come from
the phase-1 segmentation (or selective search, by config), exactly as they
will at detection time. After every CNN epoch the validation images are
scored with the CNN's own classifier (the SVM comes last), and at the end the
whole detector is scored, with the F1-best threshold reported beside the
configured one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from wsimito.boxes import nms
from wsimito.bundle import MitosisModel
from wsimito.config import Config
from wsimito.datasets.splits import split_images
from wsimito.datasets.truth import read_truth
from wsimito.ensemble import RCNNEnsemble
from wsimito.errors import WsimitoError
from wsimito.evaluation import Detections, evaluate, threshold_sweep
from wsimito.inference import propose_image
from wsimito.labels import make_boxes, read_boxes_csv
from wsimito.nets.inputs import to_tensor
from wsimito.proposals import proposal_recall
from wsimito.rcnn import PIECE_OVERLAP, RCNN, Sample
from wsimito.segmentation import SegmentationModel, segment_array
from wsimito.slide import open_slide

# Training images propose at this fraction of detector.proposal_threshold. Phase 1 was trained on them (or on
# images like them) and segments their look-alikes (pyknotic and apoptotic nuclei, lymphocytes) far less than
# those of new images: on synthetic fields about half as many negatives at the same threshold, and about as
# many at a third of it. Without them the R-CNN never learns to reject what it will meet.
TRAINING_PROPOSAL_THRESHOLD_FACTOR = 1 / 3


@dataclass
class LabelledField:
    """An image at the model mpp with its label boxes and points (pixels at that mpp)."""

    name: str
    rgb: np.ndarray
    boxes: np.ndarray  # (K, 4)
    points: np.ndarray  # (K, 2) the weak labels the boxes came from
    sources: tuple = ()  # per box: "segmentation" or "fallback" (make-boxes), "file" (a boxes CSV)
    prob: np.ndarray | None = None  # phase 1's map, when the caller segmented the image already
    # proposals already made, by the settings that made them: the folds of a leave-one-slide-out run share
    # their images, and selective search costs seconds per field (an image is bound to one phase 1, as prob is)
    proposals: dict = field(default_factory=dict, repr=False)


def train_detector(fields: list[LabelledField], segmentation: SegmentationModel, config: Config, seed: int = 0,
                   device="cpu", on_epoch=None, on_stage=None) -> tuple[MitosisModel, dict]:
    """Train phase 2 and return the bundle and a report (per-epoch and final validation F1).

    With ``detector.members`` above 1, that many R-CNNs are trained as one would be with seeds ``seed``,
    ``seed + 1``, ..., and score as their mean (``RCNNEnsemble``) at the mean of their thresholds.
    """
    stage = on_stage or (lambda _: None)
    count = config.detector.members
    single = replace(config, detector=replace(config.detector, members=1))
    members, reports = [], []
    for k in range(count):
        if count > 1:
            stage(f"member {k + 1} of {count} (seed {seed + k})")
        rcnn, report = _train_rcnn(fields, segmentation, single, seed + k, device, on_epoch, stage)
        members.append(rcnn)
        reports.append(report)
    threshold = float(np.mean([report["threshold"] for report in reports]))
    model = MitosisModel(segmentation, members[0] if count == 1 else RCNNEnsemble(members),
                         replace(config, detector=replace(config.detector, threshold=threshold)))
    report = reports[0] if count == 1 else {"members": reports, "threshold": threshold}
    model.notes = {"seed": seed, "phase2": report}
    return model, report


def _train_rcnn(fields: list[LabelledField], segmentation: SegmentationModel, config: Config, seed: int, device,
                on_epoch, stage) -> tuple[RCNN, dict]:
    """One R-CNN and its report; the report's threshold is the one it would be used at."""
    train_idx, val_idx = split_images(len(fields), config.detector.val_fraction, seed)
    stage("segmenting and proposing")
    proposals, liberal = [], []  # at the detection threshold, and at the training one
    for f in fields:
        prob = f.prob if f.prob is not None else segment_array(segmentation, f.rgb, config.tiling.tile_size,
                                                               config.tiling.halo, device=device)
        proposals.append(_proposals(f, prob, config))
        liberal.append(_proposals(f, prob, _training_config(config)))
    train = [Sample(fields[i].rgb, fields[i].boxes, liberal[i], _is_whole_field(fields[i], config)) for i in train_idx]
    val = [(fields[i], proposals[i]) for i in val_idx]
    history = []
    rcnn = RCNN(config.detector, device)

    def after_epoch(epoch, epochs, loss):
        f1 = _cnn_f1(rcnn, val, config) if val else float("nan")
        history.append({"epoch": epoch, "loss": loss, "val_f1_cnn": f1})
        if on_epoch:
            on_epoch(epoch, epochs, loss, f1)

    stage("training the R-CNN")
    calibration, sources = _calibration_images(fields, proposals, train_idx, val_idx, config)
    rcnn.fit(train, seed=seed, on_epoch=after_epoch, calibration=calibration, calibration_sources=sources)
    if config.detector.choose_threshold and rcnn.f1_threshold_ is not None:
        config = replace(config, detector=replace(config.detector, threshold=rcnn.f1_threshold_))
    report = {"seed": seed, "train_images": len(train_idx), "val_images": len(val_idx), "history": history,
              "label_boxes": _label_sources(fields), "proposals_per_image": _mean_count(proposals),
              "calibrated_on": rcnn.calibrated_on_, "threshold": config.detector.threshold}
    if val:
        report["val_proposal_recall"] = _proposal_recall(val)
        report.update(_final_scores(rcnn, val, config))
    return rcnn, report


def _proposals(image: LabelledField, prob: np.ndarray, config: Config) -> np.ndarray:
    """``propose_image``, remembered on the image (selective search has no threshold: one search serves both
    the detection and the training threshold)."""
    d, t = config.detector, config.tiling
    searching = d.proposals.startswith("search-")
    key = (d.proposals, None if searching else d.proposal_threshold, d.proposal_margin_um, d.min_box_um,
           d.max_box_um, t.tile_size, t.halo, t.mpp)
    if key not in image.proposals:
        image.proposals[key] = propose_image(image.rgb, prob, config)
    return image.proposals[key]


def _calibration_images(fields, proposals, train_idx, val_idx, config: Config):
    """The images the scores are calibrated on, and which training sample each is (None: validation).

    Scores must mean the same on a slide as in training: the share of proposals that are mitoses is far
    higher in a crop centred on a mitosis than in a whole field, and Platt scaling learns that share. So
    when whole fields (at least a tile wide and high) are among the images, they alone calibrate: the
    validation ones, and the training ones through SVMs trained without them (see RCNN.fit). Otherwise
    the validation images do: held out from phase 2 (and from phase 1 when train-seg split with the same
    seed and fraction), their scores are not too easy as the training images' are.
    """
    position = {index: at for at, index in enumerate(train_idx)}
    chosen = [i for i in [*val_idx, *train_idx] if _is_whole_field(fields[i], config)]
    if not any(len(fields[i].boxes) for i in chosen):
        chosen = list(val_idx)
    return ([Sample(fields[i].rgb, fields[i].boxes, proposals[i]) for i in chosen],
            [position.get(i) for i in chosen])


def _is_whole_field(image: LabelledField, config: Config) -> bool:
    """At least a tile wide and high: an image as detection sees it, not a crop centred on a mitosis."""
    return min(image.rgb.shape[:2]) >= config.tiling.tile_size


def _training_config(config: Config) -> Config:
    """The config whose proposals the R-CNN trains on: a lower proposal threshold (see the constant)."""
    threshold = config.detector.proposal_threshold * TRAINING_PROPOSAL_THRESHOLD_FACTOR
    return replace(config, detector=replace(config.detector, proposal_threshold=threshold))


@torch.no_grad()
def _cnn_f1(rcnn: RCNN, val, config: Config) -> float:
    """Validation F1 using the CNN's softmax as the score (the SVM is not trained yet)."""
    was_training = rcnn.cnn.training
    rcnn.cnn.eval()
    tp = fp = fn = 0
    for image, boxes in val:
        centres = np.zeros((0, 2))
        if len(boxes):
            regions = rcnn.warp(image.rgb, boxes)
            scores = torch.softmax(rcnn.cnn(to_tensor(regions, rcnn.device)), 1)[:, 1].cpu().numpy()
            keep = nms(boxes, scores, config.detector.nms_iou, PIECE_OVERLAP)
            keep = keep[scores[keep] >= 0.5]
            centres = _centres(boxes[keep])
        result = evaluate({"f": Detections(centres, np.ones(len(centres)))}, {"f": image.points}, config.tiling.mpp,
                          radius_um=config.evaluation.radius_um, rule=config.evaluation.match)
        tp, fp, fn = tp + result.pooled.tp, fp + result.pooled.fp, fn + result.pooled.fn
    if was_training:
        rcnn.cnn.train()
    return 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else float("nan")


def _final_scores(rcnn: RCNN, val, config: Config) -> dict:
    detections, truth = {}, {}
    for image, boxes in val:
        found, scores = rcnn.predict(image.rgb, boxes)
        detections[image.name] = Detections(_centres(found), rcnn.relative(scores))
        truth[image.name] = image.points
    mpp, radius, rule = config.tiling.mpp, config.evaluation.radius_um, config.evaluation.match
    at_threshold = evaluate(detections, truth, mpp, radius_um=radius, rule=rule, threshold=config.detector.threshold)
    sweep = threshold_sweep(detections, truth, mpp, radius_um=radius, rule=rule)
    best = sweep.best
    return {
        "val_threshold": config.detector.threshold,
        "val_precision": at_threshold.pooled.precision,
        "val_recall": at_threshold.pooled.recall,
        "val_f1": at_threshold.pooled.f1,
        "val_best_threshold": float(sweep.best_threshold) if best is not None else float("nan"),
        "val_best_f1": float(sweep.f1[best]) if best is not None else float("nan"),
    }


def _label_sources(fields: list[LabelledField]) -> dict:
    """How many label boxes came from where: many fallbacks mean phase 1 misses the labelled figures."""
    sources = [source for field in fields for source in field.sources]
    return {name: sources.count(name) for name in sorted(set(sources))}


def _mean_count(proposals) -> float:
    return float(np.mean([len(p) for p in proposals])) if proposals else float("nan")


def _proposal_recall(val) -> float:
    """Share of the validation label boxes that some proposal overlaps with IoU >= 0.5: what the R-CNN
    can find at best. A low value points at the proposals (threshold, segmentation), not the scoring."""
    hits = [proposal_recall(boxes, field.boxes) for field, boxes in val]
    hits = np.concatenate(hits) if hits else np.zeros(0, bool)
    return float(hits.mean()) if len(hits) else float("nan")


def _centres(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes).reshape(-1, 4)
    return np.column_stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2])


def load_fields(images, config: Config, segmentation: SegmentationModel, mpp=None, boxes_path=None,
                points_path=None, device="cpu", points: dict | None = None,
                box_mode: str = "segmentation") -> list[LabelledField]:
    """Images read whole at the model mpp, with their label boxes (from a CSV, or made from points).

    ``mpp``: one value for all images, or ``{image stem: mpp}``, for images that do not record theirs.
    ``points``: ``{image stem: (N, 2) level-0 points}``, instead of a ``points_path`` file.
    ``box_mode``: how points become boxes (``make_boxes``): the segmented region, or a fixed square.
    """
    labels = read_boxes_csv(boxes_path) if boxes_path else None
    if points is None and points_path:
        points = read_truth(points_path)
    model_mpp = config.tiling.mpp
    fields = []
    for path in images:
        name = Path(path).stem
        with open_slide(path, mpp=mpp.get(name) if isinstance(mpp, dict) else mpp) as slide:
            width, height = slide.size_at(model_mpp)
            if width * height > _MAX_FIELD_PIXELS:
                raise WsimitoError(f"{path}: {width}x{height} px at {model_mpp} µm/px is too large to train on whole; "
                                   "cut it into fields")
            rgb = slide.read_whole(model_mpp)
            # segmented once: for the boxes here and for the proposals train_detector makes
            prob = segment_array(segmentation, rgb, config.tiling.tile_size, config.tiling.halo, device=device)
            if labels is not None:
                level0_points, level0_boxes = labels.get(name, (np.zeros((0, 2)), np.zeros((0, 4))))
                sources = ("file",) * len(level0_boxes)
            else:
                found = make_boxes(slide, name, (points or {}).get(name, np.zeros((0, 2))), config.boxes,
                                   segmentation, mode=box_mode, device=device, prob=prob)
                level0_points = np.array([[b.x, b.y] for b in found]).reshape(-1, 2)
                level0_boxes = np.array([[b.x0, b.y0, b.x1, b.y1] for b in found]).reshape(-1, 4)
                sources = tuple(b.source for b in found)
            scale = np.array([slide.resolution.mpp_x, slide.resolution.mpp_y]) / model_mpp
            fields.append(LabelledField(name, rgb, level0_boxes * np.tile(scale, 2),
                                        (level0_points + 0.5) * scale - 0.5, sources, prob))
    return fields


_MAX_FIELD_PIXELS = 8192 * 8192
