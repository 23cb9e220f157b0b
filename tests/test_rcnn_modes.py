"""The R-CNN's options beyond the paper's defaults: hard-negative rounds, the CNN's own softmax as the head,
test-time flips, an area-scaled region cap, true-size windows in place of warped boxes; and the estimator's conventions (fitted attributes, not-fitted
error, saved state). Trained for seconds on synthetic fields: these check the machinery, not accuracy."""

import numpy as np
import pytest
import torch
from conftest import rcnn_samples, tiny_detector_config
from sklearn.exceptions import NotFittedError

from wsimito.boxes import warp_regions, window_regions
from wsimito.nets.inputs import to_tensor
from wsimito.rcnn import RCNN, _Pool


def test_predict_before_fit_is_a_clear_not_fitted_error():
    rcnn = RCNN(tiny_detector_config())
    with pytest.raises(NotFittedError, match="not fitted"):
        rcnn.predict(np.zeros((64, 64, 3), np.uint8), np.array([[0, 0, 10, 10]]))


def test_softmax_head_scores_by_the_cnns_own_logit_difference():
    samples = rcnn_samples()
    rcnn = RCNN(tiny_detector_config(head="softmax")).fit(samples, seed=0)
    regions = rcnn.warp(samples[0].rgb, samples[0].proposals)
    with torch.no_grad():
        logits = rcnn.cnn(to_tensor(regions, "cpu")).double().numpy()
    margins = rcnn._margin(rcnn._scaled(regions))
    np.testing.assert_allclose(margins, logits[:, 1] - logits[:, 0], rtol=1e-4, atol=1e-4)


def test_a_window_keeps_the_shape_and_size_that_a_warp_stretches_away():
    image = np.full((200, 200, 3), 255, np.uint8)
    image[96:104, 70:130] = 0  # a long thin dark nucleus, 60 x 8 px
    image[20:28, 20:28] = 0  # a small round one, 8 x 8 px
    boxes = np.array([[70, 96, 130, 104], [20, 20, 28, 28]], float)
    long, small = window_regions(image, boxes, size=40, window=80) < 128
    assert long[..., 0].any(axis=0).sum() == 30 and long[..., 0].any(axis=1).sum() == 4  # half size, still 15:2
    assert small[..., 0].sum() == 16  # 4 x 4 px at half size, white beyond the image edge
    assert not small[:8, :8].any()
    stretched = warp_regions(image, boxes, size=40, context=4) < 128
    assert stretched[:, 6:34, 6:34, 0].all()  # both fill the square


def test_a_window_detector_scores_windows_around_each_proposal():
    samples = rcnn_samples()
    rcnn = RCNN(tiny_detector_config(window=48)).fit(samples, seed=0)
    boxes = samples[0].proposals
    np.testing.assert_array_equal(rcnn.warp(samples[0].rgb, boxes),
                                  window_regions(samples[0].rgb, boxes, rcnn.config.warp, 48))
    refined, scores = rcnn.predict(samples[0].rgb, boxes)
    assert len(scores) and ((scores >= 0) & (scores <= 1)).all()


def test_hard_negative_rounds_add_the_cnns_worst_false_proposals():
    samples = rcnn_samples()
    rcnn = RCNN(tiny_detector_config(mining_rounds=1, cap_tile_px=128)).fit(samples, seed=0)
    mined = rcnn._hard_negatives(samples)
    # a 256 px image holds four 128 px tiles' share of the cap, and mined regions lie clear of every label box
    assert 0 < len(mined.pixels) <= len(samples) * np.ceil(rcnn._cap(samples[0].rgb) / 2)
    assert rcnn._cap(samples[0].rgb) == 4 * rcnn.config.max_regions_per_image
    assert mined.mined.all() and not mined.is_proposal.any() and (mined.best_iou == 0).all()


def test_flip_averaged_scores_do_not_change_when_the_image_is_flipped():
    samples = rcnn_samples()
    rcnn = RCNN(tiny_detector_config(tta=True)).fit(samples, seed=0)
    image, boxes = samples[0].rgb, samples[0].proposals
    flipped = np.ascontiguousarray(image[:, ::-1])
    width = image.shape[1]
    mirrored = np.column_stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]])
    plain = rcnn.calibrated(rcnn._margin(rcnn._scaled(rcnn.warp(image, boxes), tta=True)))
    mirror = rcnn.calibrated(rcnn._margin(rcnn._scaled(rcnn.warp(flipped, mirrored), tta=True)))
    np.testing.assert_allclose(plain, mirror, atol=2e-3)


def test_saved_state_keeps_its_keys_and_gives_the_same_scores():
    samples = rcnn_samples()
    rcnn = RCNN(tiny_detector_config()).fit(samples, seed=0)
    state = rcnn.state()
    assert set(state["arrays"]) == {"feature_mean", "feature_scale", "svm_coef", "ridge_coef", "ridge_intercept"}
    assert {"config", "cnn", "arrays", "svm_intercept", "platt"} == set(state)
    loaded = RCNN.from_state(state)
    before = rcnn.predict(samples[1].rgb, samples[1].proposals)
    after = loaded.predict(samples[1].rgb, samples[1].proposals)
    np.testing.assert_allclose(before[1], after[1])


def test_field_shares_fill_that_part_of_each_batch_from_whole_fields_only():
    rng = np.random.default_rng(0)
    every, on_fields = np.arange(1000), np.arange(990, 1000)  # fields hold 1% of the regions
    drawn = _Pool(every, on_fields, 0.5).draw(96, rng)
    assert len(drawn) == 96 and np.isin(drawn[48:], on_fields).all()
    assert np.isin(drawn, on_fields).mean() < 0.6  # the other half is drawn from every region
    # without whole fields among the images the whole batch comes from every region
    assert len(_Pool(every, np.zeros(0, np.intp), 0.5).draw(96, rng)) == 96

