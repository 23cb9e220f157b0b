"""Tissue masks: glass, black blanks, marker ink and specks out; area in mm²."""

import cv2
import numpy as np
import pytest

from wsimito.config import TissueConfig
from wsimito.slide import open_slide
from wsimito.tissue import detect_tissue, tissue_mask_from_rgb


def _thumbnail_with_everything(seed=0):
    """A 400x300 thumbnail at 8 µm/px: glass, an H&E disc, blue and green ink, a black strip, dust."""
    rng = np.random.default_rng(seed)
    image = np.empty((300, 400, 3), np.uint8)
    image[:] = (242, 241, 239)
    image = np.clip(image + rng.normal(0, 2, image.shape), 0, 255).astype(np.uint8)
    truth = np.zeros((300, 400), np.uint8)
    cv2.circle(truth, (200, 150), 100, 1, -1)
    stain = np.where(rng.random((300, 400, 1)) < 0.3, (120, 60, 150), (225, 150, 190))  # nuclei and eosin
    image[truth.astype(bool)] = stain[truth.astype(bool)]
    ink = np.zeros_like(truth)
    cv2.line(ink, (60, 20), (330, 280), 1, 7)  # blue marker across glass and tissue
    image[ink.astype(bool)] = (45, 85, 190)
    cv2.circle(image, (40, 250), 12, (50, 150, 80), -1)  # green dot on glass
    image[:, 385:] = (10, 10, 10)  # scanner's black border
    image[20:22, 350:352] = (90, 90, 90)  # dust speck
    return image, truth.astype(bool), ink.astype(bool)


def test_mask_keeps_stained_tissue_and_drops_glass_ink_black_dust():
    image, truth, ink = _thumbnail_with_everything()
    mask = tissue_mask_from_rgb(image, mpp=8.0)
    expected = truth & ~ink
    assert not mask[ink].any(), "ink counted as tissue"
    assert not mask[:, 385:].any(), "black border counted as tissue"
    assert not mask[15:30, 345:360].any(), "dust counted as tissue"
    assert not mask[240:260, 30:50].any(), "green ink counted as tissue"
    iou = (mask & expected).sum() / (mask | expected).sum()
    assert iou > 0.93, iou


def test_small_holes_are_tissue_large_ones_are_not():
    image = np.full((200, 200, 3), 240, np.uint8)
    image[20:180, 20:180] = (220, 140, 185)
    image[50:54, 50:54] = 240  # a 4x4 px lumen: 1024 µm² at 8 µm/px
    image[90:150, 90:150] = 240  # 60x60 px: 230400 µm², open glass
    mask = tissue_mask_from_rgb(image, mpp=8.0, config=TissueConfig(max_hole_um2=50000.0))
    assert mask[51, 51] and not mask[120, 120]


def test_real_svs_tissue_area_is_plausible(data):
    """CMU-1-Small-Region: a 1.64 mm² frame, tissue roughly 40% of it (checked by eye on the overlay)."""
    with open_slide(data / "cmu1-small-region-svs/CMU-1-Small-Region.svs") as slide:
        tissue = detect_tissue(slide)
        frame_mm2 = slide.dimensions[0] * slide.dimensions[1] * slide.mpp**2 / 1e6
    assert frame_mm2 == pytest.approx(1.640, abs=0.001)
    assert 0.45 < tissue.area_mm2 < 0.85
    assert tissue.mask.shape == (185, 138)


def test_full_field_is_all_tissue(data):
    with open_slide(data / "mitos2012-icpr/images/A03_00.jpg", mpp=0.2456) as slide:
        tissue = detect_tissue(slide)
    assert tissue.area_mm2 == pytest.approx((2084 * 0.2456 / 1000) ** 2, rel=0.05)


def test_touches_maps_level0_boxes():
    from wsimito.tissue import TissueMask

    mask = np.zeros((10, 10), bool)
    mask[5, 5] = True
    tissue = TissueMask(mask, mpp=8.0, slide_mpp=(0.25, 0.25))  # one mask pixel = 32 level-0 px
    assert tissue.touches(160, 160, 192, 192)
    assert not tissue.touches(0, 0, 160, 160)
    assert tissue.touches(100, 100, 161, 161)
    assert tissue.area_mm2 == pytest.approx(64e-6)


def test_synthetic_slide_tissue_matches_truth_despite_pen_and_border(tmp_path):
    from wsimito.synth import write_slide

    truth = write_slide(tmp_path / "s.tiff", size=(3000, 4000), mpp=0.5, seed=5, pen=True, border=True, tile=256)
    with open_slide(tmp_path / "s.tiff") as slide:
        tissue = detect_tissue(slide)
    expected = cv2.resize(truth.tissue_mask.astype(np.uint8), tissue.mask.shape[::-1], interpolation=cv2.INTER_NEAREST) > 0
    iou = (tissue.mask & expected).sum() / (tissue.mask | expected).sum()
    assert iou > 0.85, iou
    assert tissue.area_mm2 == pytest.approx(truth.tissue_area_mm2, rel=0.12)
