"""Macenko stain normalisation on real fields from two scanners, and on images made from known stains."""

import cv2
import numpy as np
import pytest

from wsimito.config import DetectorConfig
from wsimito.errors import WsimitoError
from wsimito.rcnn import RCNN
from wsimito.stain import REFERENCE_MAX_CONCENTRATIONS, REFERENCE_STAINS, normalize_stain


def read(path) -> np.ndarray:
    return np.ascontiguousarray(cv2.imread(str(path))[:, :, ::-1])


def lab_means(rgb: np.ndarray) -> np.ndarray:
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(float)
    return lab[lab[:, 0] < 220].mean(axis=0)  # tissue, not glass


def stained(concentrations: np.ndarray) -> np.ndarray:
    """An RGB image (H, W, 3) mixed from (H, W, 2) haematoxylin and eosin concentrations in the reference."""
    od = concentrations @ REFERENCE_STAINS.T
    return np.clip(256 * np.exp(-od) - 1, 0, 255).astype(np.uint8)


def test_two_scanners_look_alike_after_normalisation(data):
    """MITOS 2012 scanner A (red-pink) and an AMi-Br TUPAC16 crop (blue-purple): their mean colours move
    together."""
    field = read(data / "mitos2012-icpr/images/A02_00.jpg")[:512, :512]
    crop = read(next(iter(sorted((data / "ami-br-patches/patches").rglob("TUPAC*.png")))))
    before = np.linalg.norm(lab_means(field)[1:] - lab_means(crop)[1:])  # colour (a, b), not lightness
    after = np.linalg.norm(lab_means(normalize_stain(field))[1:] - lab_means(normalize_stain(crop))[1:])
    assert after < before / 2, (before, after)


def test_an_image_in_the_reference_staining_stays_as_it_is():
    rng = np.random.default_rng(0)
    concentrations = rng.uniform(0, 1, (128, 128, 2)) * REFERENCE_MAX_CONCENTRATIONS / 0.99
    rgb = stained(concentrations)
    difference = np.abs(normalize_stain(rgb).astype(int) - rgb.astype(int))
    assert np.percentile(difference, 99) <= 6, np.percentile(difference, 99)


def test_stain_strength_is_equalised():
    """The same tissue, stained twice as strongly, comes out alike."""
    rng = np.random.default_rng(1)
    concentrations = rng.uniform(0, 0.6, (128, 128, 2))
    faint, strong = stained(concentrations), stained(2 * concentrations)
    gap_before = np.abs(faint.astype(int) - strong.astype(int)).mean()
    gap_after = np.abs(normalize_stain(faint).astype(int) - normalize_stain(strong).astype(int)).mean()
    assert gap_after < gap_before / 4, (gap_before, gap_after)


def test_glass_and_method_none_are_left_alone():
    glass = np.full((64, 64, 3), 245, np.uint8)
    assert normalize_stain(glass) is glass
    tissue = stained(np.random.default_rng(2).uniform(0, 1, (64, 64, 2)))
    assert normalize_stain(tissue, "none") is tissue
    with pytest.raises(ValueError, match="macenko"):
        normalize_stain(tissue, "reinhard")


def test_the_rcnn_sees_normalised_regions_when_configured(data):
    field = read(data / "mitos2012-icpr/images/A00_00.jpg")[:256, :256]
    boxes = np.array([[40.0, 40.0, 90.0, 90.0]])
    plain = RCNN(DetectorConfig()).warp(field, boxes)
    normalised = RCNN(DetectorConfig(stain_normalization="macenko")).warp(field, boxes)
    assert plain.shape == normalised.shape
    assert np.abs(plain.astype(int) - normalised.astype(int)).mean() > 5
    with pytest.raises(WsimitoError, match="stain_normalization"):
        DetectorConfig(stain_normalization="yes")
