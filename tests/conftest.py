"""Shared test fixtures: the real data in ../shared/data and small pyramids made on the fly."""

import json
import math
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("WSIMITO_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data() -> Path:
    """The real test data; its absence is a failure, not a skip (CI lays it beside the clone)."""
    if not (DATA / "README.md").exists():
        raise RuntimeError(f"real test data not found at {DATA}; set WSIMITO_SHARED_DATA")
    return DATA


def readme_setup_commands() -> list[str]:
    """The command lines of the README's "Set up" section, in order: what a new user types first."""
    section = (REPO / "README.md").read_text().split("## Set up\n", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in section.split("```")[1::2]]


def smooth_texture(height: int, width: int, seed: int = 0, cells=(64, 16, 6)) -> np.ndarray:
    """An RGB image with random detail at the given scales (cell sizes in pixels)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((height, width, 3), np.float64)
    for cell, weight in zip(cells, (60.0, 40.0, 25.0)):
        small = rng.normal(size=(height // cell + 2, width // cell + 2, 3))
        out += weight * cv2.resize(small, (width + 2 * cell, height + 2 * cell), interpolation=cv2.INTER_CUBIC)[
            cell : cell + height, cell : cell + width
        ]
    return np.clip(out + 150, 0, 255).astype(np.uint8)


def write_pyramid(path: Path, level0: np.ndarray, mpp: float, levels: int = 3, tile: int = 128) -> Path:
    """A lossless tiled pyramidal TIFF (OpenSlide generic-tiff): each level an exact 2x box reduction."""
    px_per_cm = 1e4 / mpp
    with tifffile.TiffWriter(path) as tif:
        image = level0
        for level in range(levels):
            tif.write(
                image,
                tile=(tile, tile),
                photometric="rgb",
                compression="zlib",
                resolution=(px_per_cm, px_per_cm),
                resolutionunit="CENTIMETER",
                subfiletype=1 if level else 0,
            )
            h, w = image.shape[:2]
            image = cv2.resize(image[: h // 2 * 2, : w // 2 * 2], (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    return path


# Elston & Ellis (1991) for 0.50 mm fields, as a pathologist's table prints it: up to 7 mitoses in ten fields
# score 1, from 15 score 3 (written out here, not taken from wsimito's table).
NOTTINGHAM_050 = (7, 15)
ROUNDED = 1e-5  # counts.csv rounds floats to 6 decimals: a density from a rounded 0.35 mm² is 1.4e-6 off


def check_clinical_columns(row: dict, detections: np.ndarray) -> None:
    """A counts.csv row's clinical columns against its detections ((N, 2) level-0 x, y), recomputed from their
    definitions: count, density over the tissue examined, the hotspot's count in its own window, the count per
    ten 0.5 mm fields and the Nottingham score."""
    count, tissue, mpp = int(row["mitoses"]), float(row["tissue_mm2"]), float(row["mpp"])
    assert count == len(detections) and tissue > 0
    assert float(row["mitoses_per_mm2"]) == pytest.approx(count / tissue, rel=ROUNDED)
    area, (hx, hy) = float(row["hotspot_mm2"]), (float(row["hotspot_x"]), float(row["hotspot_y"]))
    x, y, eps = detections[:, 0], detections[:, 1], 1e-6
    if row["hotspot_shape"] == "square":
        half = math.sqrt(area * 1e6) / mpp / 2
        inside = (np.abs(x - hx) <= half + eps) & (np.abs(y - hy) <= half + eps)
    else:
        inside = np.hypot(x - hx, y - hy) <= math.sqrt(area * 1e6 / math.pi) / mpp + eps
    hotspot = int(row["hotspot_count"])
    assert hotspot == int(inside.sum()) <= count
    assert float(row["hotspot_per_mm2"]) == pytest.approx(hotspot / area, rel=ROUNDED)
    assert float(row["field_diameter_mm"]) == 0.5
    per_10 = hotspot * 10 * math.pi * 0.25**2 / area
    assert float(row["mitoses_per_10_hpf"]) == pytest.approx(per_10, rel=ROUNDED)
    rounded = math.floor(per_10 + 0.5)
    assert int(row["mitotic_score"]) == (1 if rounded <= NOTTINGHAM_050[0] else 3 if rounded >= NOTTINGHAM_050[1]
                                         else 2)
    if tissue < area:  # a hotspot bigger than the tissue is flagged, never passed off as a full one
        assert row["hotspot_fits"] == "False" and "smaller than" in row["hotspot_note"]


TINY_MODEL_CONFIG = {
    "tiling.mpp": 0.5,
    "tiling.tile_size": 256,
    "tiling.halo": 16,
    "segmentation.widths": [4, 8],
    "segmentation.convs_per_block": 1,
    "train_seg.epochs": 1,
    "train_seg.crop": 64,
    "train_seg.crops_per_epoch": 32,
    "detector.epochs": 1,
    "detector.batches_per_epoch": 4,
    "detector.cnn_widths": [8, 16],
    "detector.warp": 32,
    "detector.context": 4,
}


# a region CNN small enough to train in seconds
TINY_DETECTOR = {"detector.epochs": 2, "detector.batches_per_epoch": 4, "detector.cnn_widths": [8, 16],
                 "detector.warp": 32, "detector.context": 4, "detector.max_regions_per_image": 16}


def tiny_detector_config(**detector):
    """The R-CNN settings of a CNN that trains in seconds, with ``detector`` overrides."""
    from wsimito.config import load_config

    return load_config(None, {**TINY_DETECTOR, **{f"detector.{k}": v for k, v in detector.items()}}).detector


def rcnn_samples(count=3):
    """Synthetic R-CNN training images: two mitoses each, proposals on them (shifted) and on background."""
    from wsimito.rcnn import Sample
    from wsimito.synth import make_field, mitosis_boxes

    samples = []
    for seed in range(count):
        field = make_field((256, 256), mpp=0.5, seed=seed, n_mitoses=2)
        boxes = mitosis_boxes(field.mask, field.centroids)
        boxes = boxes[~np.isnan(boxes).any(axis=1)]
        rng = np.random.default_rng(seed)
        corners = rng.uniform(0, 220, (12, 2))
        background = np.column_stack([corners, corners + 20])
        samples.append(Sample(field.image, boxes, np.concatenate([boxes + 1, background])))
    return samples


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A detector bundle trained for seconds on synthetic fields at 0.5 µm/px: real files, untuned weights.

    For tests of the machinery around a model (detect, outputs, resume), not of its accuracy.
    """
    from wsimito.config import load_config
    from wsimito.datasets import find_labelled_images
    from wsimito.synth import write_fields
    from wsimito.train_det import load_fields, train_detector
    from wsimito.train_seg import train_segmentation

    root = tmp_path_factory.mktemp("tiny-model")
    images = write_fields(root / "fields", n=6, size=512, mpp=0.5, seed=7)
    config = load_config(None, TINY_MODEL_CONFIG)
    labelled = [item.load() for item in find_labelled_images([root / "fields"])]
    segmentation = train_segmentation(labelled, config, root / "seg.pt", seed=0)
    fields = load_fields(images, config, segmentation, mpp=0.5, points_path=root / "fields" / "centroids.csv")
    model, _ = train_detector(fields, segmentation, config, seed=0)
    return model.save(root / "detector")


@pytest.fixture(scope="session")
def busy_model(tiny_model, tmp_path_factory):
    """The tiny model, with its proposal threshold at the 99th percentile of its own probability maps.

    The tiny model is trained for seconds and its probabilities stay far below the usual proposal threshold, so
    it finds nothing, and comparing two empty tables proves little. This copy finds plenty (its detections are
    meaningless, but they are many, spread over the slide, and must come out the same on every scheduler).
    """
    from wsimito.bundle import MitosisModel
    from wsimito.segmentation import predict_proba
    from wsimito.synth import make_field

    model = MitosisModel.load(tiny_model)
    field = make_field((512, 512), mpp=0.5, seed=3)
    threshold = float(np.quantile(predict_proba(model.segmentation, field.image[None], "cpu")[0], 0.99))
    busy = tmp_path_factory.mktemp("busy-model") / "detector"
    shutil.copytree(tiny_model, busy)
    meta = json.loads((busy / "model.json").read_text())
    meta["config"]["detector"]["proposal_threshold"] = threshold
    (busy / "model.json").write_text(json.dumps(meta, indent=2))
    return busy


DARK_DISK_MODEL_MPP = 0.25


def _dark_disk_net():
    """A real two-level wavelet U-Net with set weights: its mitosis probability rises with darkness.

    Level 0's block computes relu(darkness) (darkness = 1 - mean RGB / 127.5: +0.45 on the disks, -0.65 on the
    pink); level 1 and the up path give 0, the decoder passes level 0 on, and the head maps it to a logit
    -4 + 40 relu(darkness): 0.02 on the pink, 0.5 where the mean RGB is 115, 1.0 on the disks.
    """
    import torch

    from wsimito.segmentation import SegmentationModel

    model = SegmentationModel.new({"arch": "wavelet", "widths": [1, 1], "convs_per_block": 1}, DARK_DISK_MODEL_MPP)
    net = model.net
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.zero_()
        for block in (net.encoders[0], net.encoders[1], net.decoders[0]):
            norm = block[1]
            norm.weight.fill_(1.0)
            norm.running_mean.zero_()
            norm.running_var.fill_(1.0 - norm.eps)  # an identity in eval mode
        net.encoders[0][0].weight[0, :, 1, 1] = -1.0 / 3  # -mean of the input scaled to [-1, 1]: darkness
        net.decoders[0][0].weight[0, 0, 1, 1] = 1.0
        net.head.weight[1, 0, 0, 0], net.head.bias[1] = 40.0, -4.0
    net.eval()
    return model


def _every_region_rcnn(config):
    """A real R-CNN whose linear parts score every region 0.98 and leave its box as proposed: the detections
    are the segmentation's regions, so their places are the pipeline's geometry alone."""
    import torch

    from wsimito.rcnn import RCNN

    torch.manual_seed(0)
    rcnn = RCNN(config.detector)
    dim = rcnn.cnn.feature_dim
    rcnn.feature_mean_, rcnn.feature_scale_ = np.zeros(dim), np.ones(dim)
    rcnn.svm_coef_, rcnn.svm_intercept_, rcnn.platt_ = np.zeros(dim), 4.0, (1.0, 0.0)
    rcnn.ridge_coef_, rcnn.ridge_intercept_ = np.zeros((4, dim)), np.zeros(4)
    return rcnn


@pytest.fixture(scope="session")
def dark_disk_model(tmp_path_factory) -> Path:
    """A bundle at 0.25 µm/px that detects dark objects (mean RGB below 115), made of real parts with set
    weights: for tests of where detections and probabilities land (geometry, Zarr values, devices), which an
    untrained model cannot show (its map is flat, its detections arbitrary)."""
    from wsimito.bundle import MitosisModel
    from wsimito.config import load_config

    config = load_config(None, {"tiling.mpp": DARK_DISK_MODEL_MPP, "detector.proposal_threshold": 0.5,
                                "detector.cnn_widths": [8, 16], "detector.warp": 32, "detector.context": 4,
                                "detector.threshold": 0.5, "detector.choose_threshold": False})
    directory = tmp_path_factory.mktemp("dark-disk-model") / "detector"
    return MitosisModel(_dark_disk_net(), _every_region_rcnn(config), config).save(directory)
