"""Whole-image segmentation tile by tile: the result must not depend on the tile grid."""

import numpy as np
import torch

from tests.conftest import smooth_texture
from wsimito.segmentation import SegmentationModel, segment_array

# Float noise between two runs of one net over the same pixels in differently sized inputs (measured: 0 between
# the tilings, 3e-7 for the crop); a tile misplaced by one pixel, or a halo short of the receptive field (8 px
# instead of 32), changes this map by 0.85 and 0.008.
FLOAT_NOISE = 1e-5


def _model():
    """A random 3-level net whose mitosis logit is sharpened: a random net's map hugs 0.46 (0.44-0.48 here),
    where any misplacement hides; this one spans 0.001-0.88 on the textures below, so a wrong pixel shows."""
    torch.manual_seed(0)
    model = SegmentationModel.new({"arch": "wavelet", "widths": [4, 8, 16], "convs_per_block": 1}, 0.25)
    with torch.no_grad():
        head = model.net.head
        head.weight[1] = head.weight[0] + 60 * (head.weight[1] - head.weight[0])
        head.bias[1] = head.bias[0] + 60 * (head.bias[1] - head.bias[0]) + 8
    model.net.eval()
    return model


def test_tile_size_does_not_change_the_map():
    model, rgb = _model(), smooth_texture(300, 260, seed=1)
    small_tiles = segment_array(model, rgb, tile=128, halo=32)
    large_tiles = segment_array(model, rgb, tile=512, halo=32)
    assert small_tiles.shape == (300, 260)
    assert np.quantile(small_tiles, 0.05) < 0.1 and np.quantile(small_tiles, 0.95) > 0.8  # contrast to see by
    # the 32 px halo covers this net's receptive field: the tilings agree to float noise
    assert np.abs(small_tiles - large_tiles).max() < FLOAT_NOISE
    # ... and a halo that does not cover it is seen
    assert np.abs(segment_array(model, rgb, tile=128, halo=8) - large_tiles).max() > 100 * FLOAT_NOISE


def test_a_small_crop_uses_a_small_tile_with_the_same_result():
    """A 120 px crop is segmented in one tile just big enough, as a full 512 px tile would (white around it)."""
    model, rgb = _model(), smooth_texture(120, 120, seed=2)
    probabilities = segment_array(model, rgb, tile=512, halo=32)
    padded = np.full((512, 512, 3), 255, np.uint8)
    padded[32:152, 32:152] = rgb
    with torch.no_grad():
        whole = torch.softmax(model.net(torch.from_numpy(padded).permute(2, 0, 1)[None].float() / 127.5 - 1), 1)
    assert probabilities.max() - probabilities.min() > 0.5
    assert np.abs(probabilities - whole[0, 1, 32:152, 32:152].numpy()).max() < FLOAT_NOISE
