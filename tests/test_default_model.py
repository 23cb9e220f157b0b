"""The shipped default model: it loads weights-only, is what `detect` uses without --model, and finds real
mitoses. A broken, untrained or missing model fails here."""

import csv
import json
import shlex
import subprocess

import numpy as np
import pytest
import zarr
from conftest import check_clinical_columns, readme_setup_commands

from wsimito.bundle import MitosisModel, bundle_sha256
from wsimito.weights import DEFAULT_MODEL, default_model_path

# A03_00: the MITOS 2012 field with the most labelled mitoses (19). The final model was trained on it, as
# the model card says (the leave-one-slide-out scores are the held-out measure). The shipped model (session 5)
# finds 9 of the 19 with 3 false detections. The bars sit just below that: a model that finds fewer, or one that
# also fires on the field's dark non-mitotic nuclei (precision below 0.6), fails here.
FIELD = "A03_00"
MIN_FOUND = 8
MIN_PRECISION = 0.6


def test_the_default_model_is_shipped_and_loads_weights_only():
    model = MitosisModel.load(default_model_path())
    assert model.mpp == pytest.approx(0.25)
    assert model.notes["recipe"]["loso"]["pooled"]["f1"] > 0
    size = sum(path.stat().st_size for path in DEFAULT_MODEL.iterdir())
    assert size < 8 * 2**20, f"the shipped weights are {size / 2**20:.1f} MB"


def test_detect_without_model_finds_labelled_mitoses_on_a_real_field(data, tmp_path):
    field = data / "mitos2012-icpr/images" / f"{FIELD}.jpg"
    result = subprocess.run(["wsimito", "detect", field, "--mpp", "0.2456", "-o", tmp_path, "--quiet"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "counts.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    assert row["model_sha256"] == bundle_sha256(DEFAULT_MODEL)
    scored = subprocess.run(["wsimito", "evaluate", tmp_path, "--truth", data / "mitos2012-icpr/centroids.csv",
                             "--json"], capture_output=True, text=True)
    assert scored.returncode == 0, scored.stderr
    pooled = json.loads(scored.stdout)
    assert pooled["tp"] + pooled["fn"] >= 10  # the field's labels were read
    assert pooled["tp"] >= MIN_FOUND, pooled
    assert pooled["precision"] >= MIN_PRECISION, pooled


def test_the_readme_first_run(tmp_path):
    """The README's first command after its install: the default model on the shipped sample slide, as written
    there but into a temporary folder; it says where the outputs are, and they are there."""
    detect = shlex.split(readme_setup_commands()[0].split(" && ")[1])
    assert detect[:2] == ["wsimito", "detect"] and detect[-2] == "-o"
    out = tmp_path / "out"
    result = subprocess.run([*detect[:-1], out], capture_output=True, text=True, cwd=DEFAULT_MODEL.parents[2])
    assert result.returncode == 0, result.stderr
    assert f"outputs in {out}/:" in result.stderr
    # a 20x scan for a 40x model: said, not hidden
    assert "CMU-1-Small-Region: scanned at 0.499 µm/px, 2.0 times coarser" in result.stderr
    for name in ("index.html", "counts.csv", "detections.csv", "CMU-1-Small-Region.geojson",
                 "CMU-1-Small-Region.overlay.png", "CMU-1-Small-Region.gallery.png", "CMU-1-Small-Region.zarr"):
        assert (out / name).exists(), name
        assert name in result.stderr or name.replace("CMU-1-Small-Region", "") in result.stderr, name
    with open(out / "counts.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    assert row["status"] == "ok" and int(row["tiles"]) > 0
    # the numbers, not only the files: the clinical columns follow from the detections, and the Zarr store
    # records the settings the shipped model ran with (its widths 16-128, not the default config's 32-256)
    with open(out / "detections.csv", newline="") as fh:
        detections = np.array([[float(d["x"]), float(d["y"])] for d in csv.DictReader(fh)]).reshape(-1, 2)
    # no mitosis is visible on the sample: its candidates are stromal nuclei and ink (README, model card)
    assert len(detections) <= 3
    check_clinical_columns(row, detections)
    attrs = zarr.open_group(str(out / "CMU-1-Small-Region.zarr"), mode="r").attrs.asdict()
    assert attrs["config"]["segmentation"]["widths"] == [16, 32, 64, 128]
    assert attrs["config"]["segmentation"] == MitosisModel.load(DEFAULT_MODEL).settings.to_dict()["segmentation"]
