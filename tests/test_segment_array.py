"""Whole-image segmentation tile by tile: the result must not depend on the tile grid."""

import numpy as np
import torch

from tests.conftest import smooth_texture
from wsimito.segmentation import SegmentationModel, segment_array


def _model():
    torch.manual_seed(0)
    model = SegmentationModel.new({"arch": "wavelet", "widths": [4, 8, 16], "convs_per_block": 1}, 0.25)
    model.net.eval()
    return model


def test_tile_size_does_not_change_the_map():
    model, rgb = _model(), smooth_texture(300, 260, seed=1)
    small_tiles = segment_array(model, rgb, tile=128, halo=32)
    large_tiles = segment_array(model, rgb, tile=512, halo=32)
    assert small_tiles.shape == (300, 260)
    # the halo covers the receptive field of this 3-level net only in part: agreement, not identity
    assert np.abs(small_tiles - large_tiles).max() < 0.02


def test_a_small_crop_uses_a_small_tile_with_the_same_result():
    """A 120 px crop is segmented in one tile just big enough, as a full 512 px tile would (white around it)."""
    model, rgb = _model(), smooth_texture(120, 120, seed=2)
    probabilities = segment_array(model, rgb, tile=512, halo=32)
    padded = np.full((512, 512, 3), 255, np.uint8)
    padded[32:152, 32:152] = rgb
    with torch.no_grad():
        whole = torch.softmax(model.net(torch.from_numpy(padded).permute(2, 0, 1)[None].float() / 127.5 - 1), 1)
    assert np.abs(probabilities - whole[0, 1, 32:152, 32:152].numpy()).max() < 0.02
