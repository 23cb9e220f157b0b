"""Phase-1 training mechanics: schedule, split, reproducibility, resume, checkpoints, model files."""

import math

import numpy as np
import pytest
import torch

from wsimito.config import load_config
from wsimito.datasets.splits import split_images
from wsimito.errors import WsimitoError
from wsimito.resample import resample_to_mpp
from wsimito.segmentation import SegmentationModel, segment_array
from wsimito.train_seg import _lr_at, fine_tune_on_fields, train_segmentation

TINY = {
    "segmentation.widths": [4, 8],
    "segmentation.convs_per_block": 1,
    "train_seg.crop": 32,
    "train_seg.crops_per_epoch": 8,
    "train_seg.batch_size": 4,
    "train_seg.epochs": 2,
}


def _blob_images(count=3, size=64, seed=0):
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        rgb = np.full((size, size, 3), (225, 160, 195), np.uint8)
        mask = np.zeros((size, size), np.uint8)
        cy, cx = rng.integers(12, size - 12, 2)
        yy, xx = np.mgrid[:size, :size]
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 < 25
        rgb[inside], mask[inside] = (60, 30, 90), 1
        images.append((rgb, mask))
    return images


def test_lr_decays_from_lr_to_lr_min():
    schedule = load_config(None, {"train_seg.epochs": 100}).train_seg
    assert _lr_at(0, schedule) == pytest.approx(1e-3)
    assert _lr_at(99, schedule) == pytest.approx(1e-6)
    assert _lr_at(50, schedule) < _lr_at(49, schedule)


def test_split_is_by_image_and_seeded():
    train, val = split_images(10, 0.2, seed=1)
    assert len(val) == 2 and not set(train) & set(val) and sorted(train + val) == list(range(10))
    assert split_images(10, 0.2, seed=1) == (train, val)
    assert split_images(1, 0.2, seed=1) == ([0], [])


def test_resample_mask_follows_image():
    rgb = np.zeros((100, 100, 3), np.uint8)
    mask = np.zeros((100, 100), np.uint8)
    mask[40:60, 40:60] = 1
    small_rgb, small_mask = resample_to_mpp(rgb, mask, 0.125, 0.25)
    assert small_rgb.shape == (50, 50, 3) and small_mask.sum() == 100


def test_resume_gives_the_same_model_as_an_unbroken_run(tmp_path):
    config = load_config(None, TINY)
    images = _blob_images()
    full = train_segmentation(images, config, tmp_path / "full.pt", seed=3)
    half_config = load_config(None, {**TINY, "train_seg.epochs": 1})
    train_segmentation(images, half_config, tmp_path / "resumed.pt", seed=3)
    resumed = train_segmentation(images, config, tmp_path / "resumed.pt", seed=3, resume=True)
    for key, value in full.net.state_dict().items():
        assert torch.equal(value, resumed.net.state_dict()[key]), key
    assert [h["epoch"] for h in resumed.info["history"]] == [1, 2]
    assert not math.isnan(resumed.info["history"][-1]["val_dice"])


def test_model_file_round_trip_weights_only(tmp_path):
    config = load_config(None, {**TINY, "train_seg.epochs": 1})
    model = train_segmentation(_blob_images(), config, tmp_path / "m.pt", seed=0)
    loaded = SegmentationModel.load(tmp_path / "m.pt")
    assert loaded.mpp == 0.25 and loaded.spec["widths"] == [4, 8]
    x = torch.rand(1, 3, 32, 32)
    model.net.eval()
    assert torch.allclose(model.net(x), loaded.net(x), atol=1e-5)  # memory formats differ: float noise only
    assert (tmp_path / "m.pt.ckpt").exists()
    assert not list(tmp_path.glob("*partial*"))


def test_bad_model_and_checkpoint_files(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(WsimitoError, match="not a wsimito model"):
        SegmentationModel.load(junk)
    with pytest.raises(WsimitoError, match="no checkpoint"):
        train_segmentation(_blob_images(), load_config(None, TINY), tmp_path / "new.pt", resume=True)


def _field_with_a_look_alike(size=96):
    """A field with one labelled dark blob and one unlabelled dark blue square (a look-alike): only whole
    fields show phase 1 such a thing as background."""
    rgb = np.full((size, size, 3), (225, 160, 195), np.uint8)
    mask = np.zeros((size, size), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    mitosis = (yy - 24) ** 2 + (xx - 24) ** 2 < 25
    rgb[mitosis], mask[mitosis] = (60, 30, 90), 1
    rgb[62:74, 62:74] = (40, 40, 140)
    return rgb, mask


def test_fine_tuning_on_fields_unlearns_a_look_alike_the_crops_never_showed(tmp_path):
    config = load_config(None, {**TINY, "train_seg.epochs": 4, "train_seg.crops_per_epoch": 64, "train_seg.lr": 1e-2,
                                "train_seg.lr_min": 1e-3, "train_seg.field_steps": 60, "train_seg.field_lr": 1e-2})
    crops = _blob_images(count=4)
    base = train_segmentation(crops, config, tmp_path / "base.pt", seed=0, val_images=[])
    field = _field_with_a_look_alike()
    look_alike = (slice(62, 74), slice(62, 74))
    before = segment_array(base, field[0], tile=64, halo=8)[look_alike].mean()
    steps = []
    tuned = fine_tune_on_fields(base, crops, [field], config, tmp_path / "tuned.pt", seed=0,
                                on_step=lambda done, total, loss: steps.append((done, total)))
    after = segment_array(tuned, field[0], tile=64, halo=8)
    assert steps[-1] == (60, 60)
    assert before > 0.3  # phase 1 from crops alone segments the look-alike
    assert after[look_alike].mean() < min(0.2, before / 2)
    assert after[20:28, 20:28].mean() > 0.5  # the labelled mitosis is still segmented
    saved = SegmentationModel.load(tmp_path / "tuned.pt")
    assert saved.info["fine_tune"] == {"steps": 60, "share": 0.75, "lr": 1e-2, "lr_min": 1e-3,
                                       "mitosis_fraction": 0.3, "seed": 0, "fields": 1}


def test_fine_tuning_needs_fields(tmp_path):
    config = load_config(None, {**TINY, "train_seg.field_steps": 2})
    model = train_segmentation(_blob_images(), config, tmp_path / "m.pt", seed=0)
    with pytest.raises(WsimitoError, match="needs fields"):
        fine_tune_on_fields(model, _blob_images(), [], config, tmp_path / "t.pt")


def test_a_fold_fine_tunes_on_the_given_slides_only_and_a_stale_file_is_refused(data, tmp_path):
    """The recipe's per-fold phase 1: trained on the named slides' real fields, recorded as such, reused by a
    rerun with the same settings and refused with others (a workdir left by another configuration)."""
    from wsimito.recipe import phase1_on_fields

    config = load_config(None, {**TINY, "train_seg.field_steps": 2})
    base = tmp_path / "base.pt"
    train_segmentation(_blob_images(), config, base, seed=0)
    out, said = tmp_path / "segmentation-without-A03.pt", []
    tuned = phase1_on_fields(base, _blob_images(), data, ["A00", "A02"], config, out, 0, "cpu", said.append)
    assert tuned.info["fine_tune"]["slides"] == ["A00", "A02"] and tuned.info["fine_tune"]["fields"] == 6
    phase1_on_fields(base, _blob_images(), data, ["A00", "A02"], config, out, 0, "cpu", said.append)
    assert "reusing" in said[-1]
    other = load_config(None, {**TINY, "train_seg.field_steps": 2, "train_seg.field_lr": 1e-4})
    with pytest.raises(WsimitoError, match="other settings"):
        phase1_on_fields(base, _blob_images(), data, ["A00", "A02"], other, out, 0, "cpu", said.append)
    with pytest.raises(WsimitoError, match="other settings"):
        phase1_on_fields(base, _blob_images(), data, ["A00", "A02", "A03"], config, out, 0, "cpu", said.append)
