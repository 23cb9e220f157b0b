"""Region proposals: selective search (whole tiles and tiled over a field), the segmentation's regions, and
their refinement. Dark disks on a pink background stand in for mitoses where a box must be exact."""

import cv2
import numpy as np
import pytest

from wsimito.config import load_config
from wsimito.inference import propose, propose_image
from wsimito.boxes import box_iou
from wsimito.proposals import (proposal_recall, refine_with_selective_search, segmentation_proposals,
                               selective_search)

# disk centres (x, y) and radius: one in a tile's core, one across the border between the first two tiles'
# cores (448 px with 512 px tiles and a 32 px halo), one near the field's far corner
DISKS = [(150, 170), (452, 300), (860, 880)]
RADIUS = 14


def disk_field(size: int = 960) -> np.ndarray:
    rng = np.random.default_rng(0)
    rgb = np.full((size, size, 3), (235, 190, 215), np.float64) + rng.normal(0, 4, (size, size, 3))
    rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    for x, y in DISKS:
        cv2.circle(rgb, (x, y), RADIUS, (70, 30, 110), thickness=-1)
    return rgb


def disk_boxes() -> np.ndarray:
    return np.array([[x - RADIUS, y - RADIUS, x + RADIUS + 1, y + RADIUS + 1] for x, y in DISKS], float)


def search_config(**overrides):
    return load_config(None, {"detector.proposals": "search-fast", "tiling.mpp": 0.25, **overrides})


def test_selective_search_keeps_boxes_within_the_side_limits():
    boxes = selective_search(disk_field(480), "fast", min_side=10, max_side=60)
    sides = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)
    assert len(boxes) and sides.min() >= 10 and sides.max() <= 60
    with pytest.raises(ValueError, match="fast"):
        selective_search(disk_field(64), "slow")


def test_tiled_search_finds_every_disk_where_it_lies():
    """Tiles must be put back in the field's frame: an offset of a halo (32 px) would miss each disk."""
    boxes = propose_image(disk_field(), None, search_config())
    assert proposal_recall(boxes, disk_boxes(), iou=0.8).all(), box_iou(disk_boxes(), boxes).max(axis=1)


def test_tiled_search_proposes_each_box_once_and_inside_the_field():
    """Each tile keeps only the boxes centred in its core, so overlapping halos give no duplicates."""
    rgb = disk_field()
    boxes = propose_image(rgb, None, search_config())
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    assert (centres >= 0).all() and (centres < rgb.shape[0]).all()
    assert len(np.unique(boxes, axis=0)) == len(boxes)
    assert len(boxes) > 4 * len(DISKS)  # the background's texture is proposed too: the search ran everywhere


def test_a_tile_sized_image_is_searched_whole_and_the_same_every_time():
    rgb = disk_field(480)
    config = search_config()
    np.testing.assert_array_equal(propose_image(rgb, None, config), propose(rgb, None, config))


def test_segmentation_proposals_box_the_regions_above_the_threshold():
    prob = np.zeros((200, 200), np.float32)
    prob[20:40, 30:45] = 0.9  # a region
    prob[100:104, 100:104] = 0.9  # too small
    prob[150:170, 150:170] = 0.2  # below the threshold
    boxes = segmentation_proposals(prob, threshold=0.5, min_area=30, group=False)
    np.testing.assert_array_equal(boxes, [[30, 20, 45, 40]])
    grown = segmentation_proposals(prob, threshold=0.5, margin=3, min_area=30, group=False)
    np.testing.assert_array_equal(grown, [[27, 17, 48, 43]])


def test_segmentation_proposals_group_the_pieces_of_one_figure():
    """The two chromosome sets of an anaphase: each set and the whole figure are proposed."""
    prob = np.zeros((200, 200), np.float32)
    prob[50:60, 40:70] = 1.0
    prob[68:78, 40:70] = 1.0  # 8 px below: closer than the pieces are long
    prob[150:160, 150:160] = 1.0  # far away: a figure of its own
    boxes = segmentation_proposals(prob, threshold=0.5)
    assert [40, 50, 70, 78] in boxes.tolist()
    assert not any(b[0] <= 40 and b[2] >= 160 for b in boxes.tolist())


def test_refinement_adds_search_boxes_around_each_seed_only():
    rgb = disk_field(480)
    x, y = DISKS[0]
    seed = np.array([[x - 10, y - 10, x + 10, y + 10]], float)
    boxes = refine_with_selective_search(rgb, seed, window=320, min_side=10, max_side=200)
    np.testing.assert_array_equal(boxes[0], seed[0])
    assert 1 < len(boxes) <= 21
    contain_the_centre = (boxes[:, 0] <= x) & (boxes[:, 2] >= x) & (boxes[:, 1] <= y) & (boxes[:, 3] >= y)
    assert contain_the_centre.all() and (boxes[:, 2:] - boxes[:, :2]).max() <= 64  # the window, not max_side
    assert proposal_recall(boxes, disk_boxes()[:1], iou=0.8).all()
