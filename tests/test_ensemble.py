"""Seed ensembles of the R-CNN: the members' mean score per proposal, trained as each seed would be alone,
saved and loaded as one bundle that ``detect`` runs. Trained for seconds: these check the machinery."""

import subprocess
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import rcnn_samples, tiny_detector_config

from wsimito.bundle import MitosisModel
from wsimito.config import load_config
from wsimito.ensemble import RCNNEnsemble
from wsimito.errors import BundleError
from wsimito.rcnn import RCNN, suppressed
from wsimito.synth import write_fields
from wsimito.train_det import load_fields, train_detector


@pytest.fixture(scope="module")
def two_members():
    samples = rcnn_samples()
    return samples, [RCNN(tiny_detector_config()).fit(samples, seed=seed) for seed in (0, 1)]


def test_each_proposal_scores_the_members_mean_and_nms_runs_once_on_it(two_members):
    samples, members = two_members
    ensemble = RCNNEnsemble(members)
    rgbs, proposals = [s.rgb for s in samples], [s.proposals for s in samples]
    alone = [member.score_many(rgbs, proposals) for member in members]
    for image, (boxes, scores) in enumerate(ensemble.score_many(rgbs, proposals)):
        (boxes_a, scores_a), (boxes_b, scores_b) = alone[0][image], alone[1][image]
        assert not np.allclose(scores_a, scores_b, atol=1e-3), "two seeds should score differently"
        np.testing.assert_allclose(scores, (scores_a + scores_b) / 2)
        np.testing.assert_allclose(boxes, (boxes_a + boxes_b) / 2)
        kept_boxes, kept_scores = ensemble.predict_many([rgbs[image]], [proposals[image]])[0]
        expected_boxes, expected_scores = suppressed(boxes, scores, members[0].config.nms_iou)
        np.testing.assert_allclose(kept_scores, expected_scores)
        np.testing.assert_allclose(kept_boxes, expected_boxes)
    assert ensemble.config.members == 2 and members[0].config.members == 1


def test_a_single_rcnn_predicts_what_it_scores_after_nms(two_members):
    samples, (member, _) = two_members
    proposals = np.concatenate([samples[0].proposals, samples[0].proposals + 2])  # each one twice, shifted
    boxes, scores = member.score_many([samples[0].rgb], [proposals])[0]
    kept = member.predict(samples[0].rgb, proposals)
    np.testing.assert_allclose(kept[1], suppressed(boxes, scores, member.config.nms_iou)[1])
    assert len(scores) == len(proposals) and len(kept[1]) <= len(proposals) // 2 and np.all(np.diff(kept[1]) <= 0)


def test_members_configured_otherwise_are_refused(two_members):
    _, members = two_members
    with pytest.raises(ValueError, match="configured alike"):
        RCNNEnsemble([members[0], RCNN(tiny_detector_config(warp=24))])
    with pytest.raises(ValueError, match="at least one"):
        RCNNEnsemble([])


def test_members_train_as_each_seed_would_alone_and_the_bundle_detects_as_one(tiny_model, tmp_path):
    """train_detector with detector.members 2 and seed 5: member 2 is what seed 6 trains alone, the threshold
    is the members' mean, and the saved bundle loads as an ensemble that ``wsimito detect`` runs."""
    base = MitosisModel.load(tiny_model)
    config = load_config(None, {"tiling.mpp": 0.5, "tiling.tile_size": 256, "tiling.halo": 16,
                                "detector.epochs": 1, "detector.batches_per_epoch": 4,
                                "detector.cnn_widths": [8, 16], "detector.warp": 32, "detector.context": 4})
    images = write_fields(tmp_path / "fields", n=4, size=256, mpp=0.5, seed=11)
    fields = load_fields(images, config, base.segmentation, mpp=0.5,
                         points_path=tmp_path / "fields" / "centroids.csv")
    ensemble, report = train_detector(fields, base.segmentation, _members(config, 2), seed=5)
    alone, _ = train_detector(fields, base.segmentation, config, seed=6)
    assert isinstance(ensemble.rcnn, RCNNEnsemble) and len(ensemble.rcnn.members) == 2
    assert [member["seed"] for member in report["members"]] == [5, 6]
    for name, weights in alone.rcnn.cnn.state_dict().items():
        torch.testing.assert_close(ensemble.rcnn.members[1].cnn.state_dict()[name], weights)
    np.testing.assert_allclose(ensemble.rcnn.members[1].svm_coef_, alone.rcnn.svm_coef_)
    thresholds = [member["threshold"] for member in report["members"]]
    assert ensemble.config.detector.threshold == pytest.approx(np.mean(thresholds))
    assert ensemble.config.detector.members == 2

    bundle = ensemble.save(tmp_path / "ensemble")
    loaded = MitosisModel.load(bundle)
    assert isinstance(loaded.rcnn, RCNNEnsemble) and loaded.settings.detector.members == 2
    rgb, proposals = fields[0].rgb, fields[0].boxes
    np.testing.assert_allclose(loaded.rcnn.predict(rgb, proposals)[1], ensemble.rcnn.predict(rgb, proposals)[1])
    out = tmp_path / "out"
    run = subprocess.run(["wsimito", "detect", str(images[0]), "-o", str(out), "--model", str(bundle), "--mpp",
                          "0.5", "--quiet"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "ok" in (out / "counts.csv").read_text()

    # an rcnn.pt whose members were configured differently is refused in one line naming the file
    state = torch.load(bundle / "rcnn.pt", weights_only=True)
    state["members"][1]["config"]["warp"] = 24
    torch.save(state, bundle / "rcnn.pt")
    with pytest.raises(BundleError, match=r"rcnn\.pt: the members of an ensemble must be configured alike"):
        MitosisModel.load(bundle)


def _members(config, count):
    return replace(config, detector=replace(config.detector, members=count))
