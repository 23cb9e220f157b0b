"""Points -> boxes: region geometry, fallback, and fixed mode on a real field."""

import numpy as np
import pytest

from wsimito.config import BoxesConfig
from wsimito.labels import make_boxes, region_boxes
from wsimito.slide import open_slide


def test_region_box_is_the_bounding_rectangle_of_the_region_with_the_point():
    mask = np.zeros((40, 40), bool)
    mask[10:15, 20:28] = True  # the region
    mask[30:35, 2:6] = True  # another one
    # the point inside a region, one outside any region
    assert region_boxes(mask, [(22, 12), (0, 0)], max_side=20) == [(20.0, 10.0, 28.0, 15.0), None]
    assert region_boxes(mask, [(22, 12)], max_side=6) == [None]  # too big to be one mitosis


def test_fixed_mode_squares_in_micrometres(data):
    points = np.array([[2008.0, 929.0], [366.0, 1230.0]])
    with open_slide(data / "mitos2012-icpr/images/A00_00.jpg", mpp=0.2456) as slide:
        boxes = make_boxes(slide, "A00_00", points, BoxesConfig(fallback_size_um=12.5), mode="fixed")
    assert [b.source for b in boxes] == ["fallback", "fallback"]
    side = 12.5 / 0.2456
    assert boxes[0].x1 - boxes[0].x0 == pytest.approx(side) and boxes[0].y1 - boxes[0].y0 == pytest.approx(side)
    assert ((boxes[0].x0 + boxes[0].x1) / 2, (boxes[0].y0 + boxes[0].y1) / 2) == pytest.approx((2008, 929))


def test_drop_fallback(data):
    with open_slide(data / "mitos2012-icpr/images/A00_00.jpg", mpp=0.2456) as slide:
        assert make_boxes(slide, "A00_00", np.array([[10.0, 10.0]]), BoxesConfig(fallback="drop"), mode="fixed") == []


def test_segmentation_mode_needs_a_model(data):
    with open_slide(data / "mitos2012-icpr/images/A00_00.jpg", mpp=0.2456) as slide:
        with pytest.raises(ValueError, match="needs a segmentation model"):
            make_boxes(slide, "A00_00", np.array([[10.0, 10.0]]))


def test_boxes_from_a_whole_image_map_are_in_level0_pixels(data):
    """With phase 1's map of the whole image given, the region around each point is read from it and mapped
    from model pixels (0.25 µm/px) back to the image's own (0.2456 µm/px)."""
    from wsimito.segmentation import SegmentationModel

    model = SegmentationModel.new({"arch": "wavelet", "widths": [4, 8], "convs_per_block": 1}, 0.25)
    with open_slide(data / "mitos2012-icpr/images/A00_00.jpg", mpp=0.2456) as slide:
        width, height = slide.size_at(0.25)
        prob = np.zeros((height, width), np.float32)
        prob[100:120, 200:230] = 0.9  # one segmented figure, 30 x 20 model pixels
        prob[400:500, 400:500] = 0.9  # a 25 µm blob: too big for config.max_box_um below
        points = np.array([[215 * 0.25 / 0.2456, 110 * 0.25 / 0.2456], [450 / 0.9824, 450 / 0.9824],
                           [10.0, 10.0]])
        config = BoxesConfig(max_box_um=20.0)
        boxes = make_boxes(slide, "A00_00", points, config, model, prob=prob)
    scale = 0.25 / 0.2456
    assert [b.source for b in boxes] == ["segmentation", "fallback", "fallback"]
    assert (boxes[0].x0, boxes[0].y0, boxes[0].x1, boxes[0].y1) == pytest.approx(
        (200 * scale, 100 * scale, 230 * scale, 120 * scale))
