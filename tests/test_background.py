"""Scores relative to their image's background (wsimito.background): the level, its shrinkage for images
with few candidates, what the R-CNN fits, and detect applying it to a slide's candidates."""

import numpy as np
import pytest
from conftest import rcnn_samples, tiny_detector_config

from wsimito.background import PRIOR_CANDIDATES, background_level, logit, relative_scores
from wsimito.ensemble import RCNNEnsemble
from wsimito.rcnn import RCNN


def test_the_level_is_a_weighted_quantile_in_logits():
    scores = np.array([0.01, 0.02, 0.1, 0.5])
    assert background_level(scores, 0.5) == pytest.approx(logit(0.02))
    # the first candidate standing for 97 proposals puts the 90th percentile on it
    assert background_level(scores, 0.9, weights=np.array([97, 1, 1, 1])) == pytest.approx(logit(0.01))


def test_a_slide_whose_background_lies_higher_is_moved_down_by_the_difference():
    rng = np.random.default_rng(0)
    quiet = 1 / (1 + np.exp(-rng.normal(-6, 1, 5000)))  # a background like the calibration fields'
    busy = 1 / (1 + np.exp(-(logit(quiet) + 2)))  # the same candidates, scored 2 logits higher
    reference = background_level(quiet, 0.9)
    np.testing.assert_allclose(relative_scores(quiet, 0.9, reference), quiet, atol=1e-9)
    moved = logit(relative_scores(busy, 0.9, reference)) - logit(busy)
    shrink = len(busy) / (len(busy) + PRIOR_CANDIDATES)
    np.testing.assert_allclose(moved, -2 * shrink, atol=0.02)


def test_a_crop_with_few_candidates_keeps_nearly_its_scores():
    crop = np.array([0.9, 0.2, 0.05, 0.01])  # a mitosis and three neighbours: its quantile says nothing
    moved = logit(relative_scores(crop, 0.9, logit(0.01))) - logit(crop)
    assert np.all(np.abs(moved) < 0.2) and relative_scores(np.zeros(0), 0.9, 0.0).shape == (0,)


def test_the_rcnn_fits_its_level_on_calibration_images_and_keeps_it_in_its_state():
    samples = rcnn_samples()
    plain = RCNN(tiny_detector_config()).fit(samples, seed=0, calibration=samples)
    relative = RCNN(tiny_detector_config(background_quantile=0.9)).fit(samples, seed=0, calibration=samples)
    assert plain.background_level_ is None and "background_level" not in plain.state()
    assert np.isfinite(relative.background_level_)
    # the same networks: only the level (and the threshold chosen on relative scores) differ
    np.testing.assert_allclose(plain.svm_coef_, relative.svm_coef_)
    scores = np.array([0.5, 0.1, 0.01])
    np.testing.assert_array_equal(plain.relative(scores), scores)
    loaded = RCNN.from_state(relative.state())
    assert loaded.background_level_ == relative.background_level_
    np.testing.assert_allclose(loaded.relative(scores), relative_scores(scores, 0.9, relative.background_level_))
    # an ensemble moves by its members' mean level; a member without a level (no calibration candidates) is left out
    loaded.background_level_ = relative.background_level_ + 1.0
    mean = relative.background_level_ + 0.5
    np.testing.assert_allclose(RCNNEnsemble([relative, loaded]).relative(scores), relative_scores(scores, 0.9, mean))
    refit = RCNN.from_state(relative.state())
    refit.background_level_ = None
    np.testing.assert_allclose(RCNNEnsemble([relative, refit]).relative(scores), relative.relative(scores))


def test_detect_stores_a_slides_candidates_relative_to_its_background(dark_disk_model, tmp_path):
    """The same bundle with and without a background quantile: detect on one field gives the same candidates,
    their scores moved as relative_scores says over the whole field's candidates, and counts them so."""
    import csv
    import shutil
    import subprocess

    import torch

    from wsimito.outputs.zarr_store import read_detections
    from wsimito.synth import write_fields

    level = -5.0
    relative = tmp_path / "relative-model"
    shutil.copytree(dark_disk_model, relative)
    state = torch.load(relative / "rcnn.pt", weights_only=True)
    state["config"]["background_quantile"], state["background_level"] = 0.9, level
    torch.save(state, relative / "rcnn.pt")
    image = write_fields(tmp_path / "field", n=1, size=(700, 700), mpp=0.25, seed=5)[0]
    found = {}
    for name, model in (("plain", dark_disk_model), ("relative", relative)):
        run = subprocess.run(["wsimito", "detect", str(image), "-o", str(tmp_path / name), "--model", str(model),
                              "--threshold", "0.95", "--quiet"], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        found[name] = read_detections(tmp_path / name / f"{image.stem}.zarr")
    plain, moved = found["plain"], found["relative"]
    assert len(plain) > 10 and (plain[:, 2] >= 0.95).all()
    np.testing.assert_allclose(moved[:, :2], plain[:, :2])
    np.testing.assert_allclose(moved[:, 2], relative_scores(plain[:, 2], 0.9, level), rtol=1e-6)
    assert (moved[:, 2] < 0.95).all()  # a background far above the model's: nothing left at this threshold
    with open(tmp_path / "relative" / "counts.csv", newline="") as fh:
        assert next(csv.DictReader(fh))["mitoses"] == "0"
