"""Model settings belong to the model: detect refuses a config that asks for others, records what it used, and a
bundle whose files do not load says which file and key, in one line."""

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
import zarr

from wsimito.bundle import MitosisModel
from wsimito.config import load_config
from wsimito.errors import BundleError
from wsimito.model_settings import model_owned, used_settings
from wsimito.weights import default_model_path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "wsimito/data/CMU-1-Small-Region.svs"
SHIPPED = default_model_path()


def wsimito(*args):
    return subprocess.run(["wsimito", *map(str, args)], capture_output=True, text=True)


def write_yaml(path, sections):
    path.write_text(yaml.safe_dump(sections))
    return path


def test_which_keys_a_run_may_set():
    assert not any(map(model_owned, ["tiling.tile_size", "tiling.halo", "detector.threshold",
                                     "detector.duplicate_radius_um", "tissue.whole", "clinical.hotspot_shape"]))
    assert all(map(model_owned, ["tiling.mpp", "segmentation.widths", "detector.proposal_threshold",
                                 "detector.stain_normalization", "detector.epochs", "train_seg.epochs",
                                 "boxes.threshold"]))


def test_a_model_setting_other_than_the_bundles_fails_in_one_line_before_any_slide(tmp_path):
    config = write_yaml(tmp_path / "run.yaml", {
        "segmentation": {"widths": [32, 64, 128, 256]},  # the default config's, not the shipped model's
        "detector": {"proposals": "search-fast", "threshold": 0.4},
        "clinical": {"hotspot_shape": "circle"},
    })
    out = tmp_path / "out"
    result = wsimito("detect", SAMPLE, "-o", out, "--config", config)
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith("wsimito: error: ") and "Traceback" not in line
    assert str(config) in line and str(SHIPPED) in line
    assert "segmentation.widths [32, 64, 128, 256] (the model's: [16, 32, 64, 128])" in line
    assert "detector.proposals search-fast (the model's: segmentation)" in line
    assert "threshold" not in line and "clinical" not in line  # run settings are not the model's
    assert not out.exists()  # refused before any slide was read or any output written


def test_a_config_that_restates_the_bundle_runs_and_the_zarr_records_the_models_settings(tmp_path):
    """The acceptance of issue 16: the sample slide with the shipped model; the run's own settings (threshold,
    hotspot shape) are honoured, the model's are the bundle's, and provenance says both."""
    config = write_yaml(tmp_path / "run.yaml", {
        "tiling": {"mpp": 0.25, "tile_size": 512},
        "segmentation": {"widths": [16, 32, 64, 128], "convs_per_block": 2},
        "detector": {"stain_normalization": "macenko", "threshold": 0.5},
        "clinical": {"hotspot_shape": "circle"},
    })
    out = tmp_path / "out"
    result = wsimito("detect", SAMPLE, "-o", out, "--config", config, "--quiet")
    assert result.returncode == 0, result.stderr
    attrs = zarr.open_group(str(out / "CMU-1-Small-Region.zarr"), mode="r").attrs.asdict()
    recorded = attrs["config"]
    assert recorded["segmentation"]["widths"] == [16, 32, 64, 128] and recorded["tiling"]["mpp"] == 0.25
    assert recorded["detector"] == {**MitosisModel.load(SHIPPED).settings.to_dict()["detector"], "threshold": 0.5}
    assert recorded["clinical"]["hotspot_shape"] == "circle" and attrs["threshold"] == 0.5
    with open(out / "counts.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    assert row["status"] == "ok" and float(row["threshold"]) == 0.5
    scores = zarr.open_group(str(out / "CMU-1-Small-Region.zarr"), mode="r")["detections"][:, 2]
    assert int(row["mitoses"]) == int((scores >= 0.5).sum()) < len(scores)  # counted at the config's threshold


def test_provenance_of_a_run_with_the_default_config_is_the_models():
    model = MitosisModel.load(SHIPPED)
    config = load_config(None, {"tiling.tile_size": 256, "detector.duplicate_radius_um": 4.0})
    used = used_settings(model, config, 0.3)
    assert used.segmentation.widths == (16, 32, 64, 128) != config.segmentation.widths
    assert used.detector.stain_normalization == "macenko" != config.detector.stain_normalization
    assert (used.tiling.tile_size, used.detector.duplicate_radius_um, used.detector.threshold) == (256, 4.0, 0.3)
    assert used.train_seg == model.config.train_seg and used.tissue == config.tissue


def _bundle_copy(tmp_path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(SHIPPED, copy)
    return copy


def _edit_model_json(bundle: Path, edit) -> None:
    meta = json.loads((bundle / "model.json").read_text())
    edit(meta)
    (bundle / "model.json").write_text(json.dumps(meta))


def _rename(section, old, new):
    def edit(meta):
        meta["config"][section][new] = meta["config"][section].pop(old)
    return edit


@pytest.mark.parametrize("edit, message", [
    (_rename("detector", "proposal_threshold", "proposal_thresh"), "unknown key(s) proposal_thresh"),
    (_rename("tissue", "min_chroma", "chroma_min"), "unknown key(s) chroma_min"),
    (lambda meta: meta.pop("config"), "required key 'config' is missing"),
    (lambda meta: meta["config"]["segmentation"].update(widths="wide"), "widths must be tuple, got 'wide'"),
    (lambda meta: meta["config"].update(detector=[1, 2]), "section 'detector' must be a mapping"),
])
def test_a_bundle_with_a_bad_model_json_is_a_one_line_error_naming_it_and_the_key(tmp_path, edit, message):
    bundle = _bundle_copy(tmp_path)
    _edit_model_json(bundle, edit)
    with pytest.raises(BundleError) as error:
        MitosisModel.load(bundle)
    text = str(error.value)
    assert message in text and str(bundle / "model.json") in text and "\n" not in text


def test_a_bundle_from_before_a_key_with_a_default_still_loads(tmp_path):
    """New settings come with defaults, so bundles saved before a key existed keep loading."""
    bundle = _bundle_copy(tmp_path)
    _edit_model_json(bundle, lambda meta: [meta["config"]["detector"].pop("nms_iou"),
                                           meta["config"]["tiling"].pop("halo")])
    state = torch.load(bundle / "rcnn.pt", weights_only=True)
    for member in _rcnn_states(state):
        del member["config"]["nms_iou"]
    torch.save(state, bundle / "rcnn.pt")
    model = MitosisModel.load(bundle)
    assert model.rcnn.config.nms_iou == model.config.detector.nms_iou == 0.3 and model.config.tiling.halo == 32
    assert model.config.detector.proposal_threshold == 0.3


@pytest.mark.parametrize("change, message", [
    (lambda state: state["config"].update(nms_overlap=state["config"].pop("nms_iou")), "unknown key(s) nms_overlap"),
    (lambda state: state.pop("platt"), "required key(s) platt"),
    (lambda state: state["config"].update(warp="48"), "warp must be int"),
])
def test_a_bundle_with_a_bad_rcnn_file_is_a_one_line_error_not_a_type_error(tmp_path, change, message):
    bundle = _bundle_copy(tmp_path)
    state = torch.load(bundle / "rcnn.pt", weights_only=True)
    change(_rcnn_states(state)[0])
    torch.save(state, bundle / "rcnn.pt")
    with pytest.raises(BundleError) as error:
        MitosisModel.load(bundle)
    assert message in str(error.value) and str(bundle / "rcnn.pt") in str(error.value)


def test_a_renamed_segmentation_spec_key_names_the_file(tmp_path):
    bundle = _bundle_copy(tmp_path)
    state = torch.load(bundle / "segmentation.pt", weights_only=True)
    state["spec"]["depth_widths"] = state["spec"].pop("widths")
    torch.save(state, bundle / "segmentation.pt")
    with pytest.raises(BundleError, match="depth_widths") as error:
        MitosisModel.load(bundle)
    assert str(bundle / "segmentation.pt") in str(error.value)


def test_detect_with_a_broken_bundle_says_so_in_one_line(tmp_path):
    bundle = _bundle_copy(tmp_path)
    _edit_model_json(bundle, _rename("detector", "proposal_threshold", "proposal_thresh"))
    result = wsimito("detect", SAMPLE, "-o", tmp_path / "out", "--model", bundle)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr and "TypeError" not in result.stderr
    assert "proposal_thresh" in result.stderr and str(bundle) in result.stderr


def _rcnn_states(state: dict) -> list[dict]:
    """The R-CNN states in an rcnn.pt: an ensemble's members, or the one R-CNN."""
    return state["members"] if "members" in state else [state]
