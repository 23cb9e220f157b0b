"""Masks from point labels (phase 1 fine-tuned on whole fields): what a field's mask keeps and drops."""

import numpy as np

from wsimito.point_masks import point_mask


def _map_with_two_blobs():
    prob = np.zeros((120, 120), np.float32)
    prob[10:20, 10:20] = 0.9  # the labelled mitosis
    prob[70:80, 70:80] = 0.8  # a look-alike phase 1 also segmented
    return prob


def test_component_at_a_point_is_kept_and_other_blobs_become_background():
    mask = point_mask(_map_with_two_blobs(), [[12.0, 17.0]])
    assert mask[10:20, 10:20].all()
    assert not mask[70:80, 70:80].any()
    assert mask.sum() == 100


def test_a_component_within_reach_counts_and_one_beyond_does_not():
    prob = _map_with_two_blobs()
    assert point_mask(prob, [[95.0, 75.0]], reach_px=20)[75, 75] == 1  # 16 px right of the blob's edge
    assert point_mask(prob, [[105.0, 75.0]], reach_px=20)[75, 75] == 0


def test_x_is_the_column_and_y_the_row():
    prob = np.zeros((120, 120), np.float32)
    prob[10:20, 70:80] = 0.9  # rows 10-19, columns 70-79
    assert point_mask(prob, [[75.0, 15.0]], reach_px=5).sum() == 100
    assert point_mask(prob, [[15.0, 75.0]], reach_px=5)[10:20, 70:80].sum() == 0  # the transpose: a disk there
    assert point_mask(prob, [[15.0, 75.0]], reach_px=5)[75, 15] == 1


def test_a_point_phase_one_missed_gets_a_disk():
    mask = point_mask(_map_with_two_blobs(), [[40.0, 100.0]], disk_px=10)
    assert mask[100, 40] == 1 and mask[100, 50] == 1 and mask[100, 51] == 0
    assert not mask[10:20, 10:20].any() and not mask[70:80, 70:80].any()
    assert abs(int(mask.sum()) - np.pi * 10**2) < 40


def test_no_points_no_mask_and_points_off_the_image_are_ignored():
    prob = _map_with_two_blobs()
    assert point_mask(prob, np.zeros((0, 2))).sum() == 0
    assert point_mask(prob, [[500.0, 500.0]]).sum() == 0


def test_masks_of_a_real_field_cover_its_mitoses_and_drop_what_else_phase_one_segments(data):
    """A real MITOS 2012 field through the shipped phase 1: every labelled mitosis is in the mask, and the
    mask is not the whole segmentation (the field's other segmented nuclei are what it teaches as background)."""
    from wsimito.bundle import MitosisModel
    from wsimito.config import load_config
    from wsimito.recipe import MITOS_MPP, mitos_fields, point_labelled_fields
    from wsimito.segmentation import segment_array
    from wsimito.weights import default_model_path

    segmentation = MitosisModel.load(default_model_path()).segmentation
    config = load_config(None, {"tiling.mpp": segmentation.mpp})
    [(rgb, mask)] = point_labelled_fields(data, ["A02"], segmentation, config, "cpu", names=["A02_00"])
    points = mitos_fields(data, ["A02"])[1]["A02_00"] * MITOS_MPP / segmentation.mpp
    assert len(points) >= 2
    for x, y in points:
        assert mask[int(y) - 4 : int(y) + 5, int(x) - 4 : int(x) + 5].any(), (x, y)
    segmented = segment_array(segmentation, rgb) >= config.boxes.threshold
    assert mask.shape == segmented.shape
    assert 0 < mask.sum() < segmented.sum()
