"""`wsimito detect` end to end on real slides: outputs, QuPath fields, Zarr pyramid, errors, resume."""

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from PIL import Image

from wsimito.outputs.zarr_store import mean_2x2
from wsimito.pipeline import in_shard
from wsimito.schema import COUNTS_CSV_COLUMNS
from wsimito.stitch import merge_duplicates, tile_to_slide
from wsimito.tiling import Tile

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "wsimito/data/CMU-1-Small-Region.svs"


def wsimito(*args, **kwargs):
    return subprocess.run(["wsimito", *map(str, args)], capture_output=True, text=True, **kwargs)


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_real_batch_with_a_corrupt_file(data, busy_model, tmp_path):
    out = tmp_path / "out"
    broken = data / "histolab-test-slides/broken.svs"
    result = wsimito("detect", SAMPLE, broken, "-o", out, "--model", busy_model, "--quiet")
    assert result.returncode == 1
    assert str(broken) in result.stderr and "Traceback" not in result.stderr
    counts = {row["slide"]: row for row in read_csv(out / "counts.csv")}
    assert list(read_csv(out / "counts.csv")[0]) == COUNTS_CSV_COLUMNS
    assert counts["broken"]["status"] == "error" and "not a slide" in counts["broken"]["error"]
    ok = counts["CMU-1-Small-Region"]
    assert ok["status"] == "ok" and float(ok["mpp"]) == pytest.approx(0.499) and "Aperio" in ok["mpp_source"]
    assert 0.45 < float(ok["tissue_mm2"]) < 0.85 and int(ok["tiles"]) > 0
    detections = read_csv(out / "detections.csv")
    assert sum(row["slide"] == "CMU-1-Small-Region" for row in detections) == int(ok["mitoses"])
    for row in detections:
        x, y = float(row["x"]), float(row["y"])
        assert 0 <= x < 2220 and 0 <= y < 2967
        assert float(row["x0"]) <= x <= float(row["x1"]) and float(row["score"]) >= float(ok["threshold"])
    _check_geojson(out / "CMU-1-Small-Region.geojson", int(ok["mitoses"]))
    assert int(ok["mitoses"]) > 0, "the busy model should find something to check"
    _check_zarr(out / "CMU-1-Small-Region.zarr", busy_model)
    assert (out / "CMU-1-Small-Region.overlay.png").stat().st_size > 1000
    assert not list(out.glob("*.partial*")) and not list(out.glob(".*partial*"))


def _check_geojson(path, count):
    collection = json.loads(path.read_text())
    assert collection["type"] == "FeatureCollection"
    detections = [f for f in collection["features"] if f["properties"]["objectType"] == "detection"]
    assert len(detections) == count
    ids = set()
    for feature in collection["features"]:
        assert feature["type"] == "Feature" and feature["geometry"]["type"] == "Polygon"
        ring = feature["geometry"]["coordinates"][0]
        assert ring[0] == ring[-1] and len(ring) >= 4
        ids.add(feature["id"])
        props = feature["properties"]
        assert props["objectType"] in ("detection", "annotation")
        assert set(props["classification"]) == {"name", "color"} and len(props["classification"]["color"]) == 3
        assert isinstance(props["measurements"], dict)
    for feature in detections:
        assert feature["properties"]["classification"]["name"] == "Mitosis"
        assert 0 <= feature["properties"]["measurements"]["score"] <= 1
    assert len(ids) == len(collection["features"])  # unique UUIDs
    if count:
        hotspots = [f for f in collection["features"] if f["properties"]["objectType"] == "annotation"]
        assert len(hotspots) == 1 and hotspots[0]["properties"]["classification"]["name"] == "Hotspot"


def _check_zarr(path, model_dir):
    from wsimito.bundle import bundle_sha256

    group = zarr.open(str(path), mode="r")
    attrs = dict(group.attrs)
    assert attrs["complete"] and attrs["model_sha256"] == bundle_sha256(model_dir)
    assert attrs["mpp_source"].startswith("Aperio") and attrs["wsimito_version"]
    assert attrs["config"]["tiling"]["tile_size"] == 512
    levels = [group["probability"][str(i)] for i in range(attrs["pyramid_levels"])]
    stride = attrs["tile_stride"]
    # level 0 covers the frame at the model mpp (0.5 µm/px here) in whole tile cores
    assert levels[0].shape[0] % stride == 0 and levels[0].shape[0] >= 2967 * 0.499 / 0.5
    for above, below in zip(levels, levels[1:]):
        assert below.shape == (-(-above.shape[0] // 2), -(-above.shape[1] // 2))
    assert max(levels[-1].shape) <= 256 and levels[0].dtype == np.uint8
    assert group["detections"].shape[1] == 7
    # values, not only shapes: every tissue tile's core was written (the fill value 0 is a probability no
    # net gives: the busy model's are above 1/255 everywhere), and each level is the 2x2 mean of the one above
    cores = levels[0][:].reshape(levels[0].shape[0] // stride, stride, levels[0].shape[1] // stride, stride)
    written = (cores > 0).all(axis=(1, 3))
    assert written.sum() == attrs["counts_row"]["tiles"], "every tissue tile's core, and only those"
    for above, below in zip(levels, levels[1:]):
        assert np.array_equal(below[:], mean_2x2(above[:]))
    # an OME-Zarr image to viewers: a maintained validator accepts it, level 0 at the model's mpp in µm
    from ome_zarr_models.v05.image import Image

    datasets = Image.from_zarr(group["probability"]).ome_attributes.multiscales[0].datasets
    assert len(datasets) == attrs["pyramid_levels"]
    assert datasets[0].coordinateTransformations[0].scale == [attrs["model_mpp"]] * 2


def test_the_stored_map_is_the_segmentation_of_the_image(dark_disk_model, tmp_path):
    """The Zarr's level 0 holds, tile core by tile core, what segment_array gives on the same image (a field at
    the model's mpp: nothing resampled), to the uint8 rounding; a writer that wrote nothing, or wrote a core in
    its neighbour's place, fails here. The dark-disk model's map has contrast (dark nuclei near 1, the rest
    near 0.02) where a trained-for-seconds model's is flat."""
    from wsimito.bundle import MitosisModel
    from wsimito.segmentation import segment_array
    from wsimito.synth import write_fields

    image = write_fields(tmp_path / "field", n=1, size=(900, 1100), mpp=0.25, seed=5)[0]
    result = wsimito("detect", image, "-o", tmp_path / "out", "--model", dark_disk_model, "--quiet")
    assert result.returncode == 0, result.stderr
    store = zarr.open_group(str(tmp_path / "out" / f"{image.stem}.zarr"), mode="r")
    stride = store.attrs["tile_stride"]
    rgb = np.asarray(Image.open(image).convert("RGB"))
    expected = np.rint(segment_array(MitosisModel.load(dark_disk_model).segmentation, rgb, 512, 32) * 255)
    stored = store["probability/0"][: rgb.shape[0], : rgb.shape[1]].astype(float)
    assert (expected > 128).mean() > 0.005 and (expected < 10).mean() > 0.5  # contrast: a misplaced core shows
    written = 0
    for y in range(0, rgb.shape[0], stride):
        for x in range(0, rgb.shape[1], stride):
            core, want = stored[y : y + stride, x : x + stride], expected[y : y + stride, x : x + stride]
            if core.any():
                written += core.size
                assert np.abs(core - want).max() <= 1, (y, x)  # rounding of float noise
    assert written >= 0.9 * rgb.shape[0] * rgb.shape[1]  # the field is tissue: nearly all of it was written
    assert store["detections"].shape[0] > 0


def test_fields_and_jpeg2000_slide_with_mpp(data, tiny_model, busy_model, tmp_path):
    out = tmp_path / "out"
    fields = [data / "mitos2012-icpr/images/A00_00.jpg", data / "mitos2012-icpr/images/A03_00.jpg"]
    result = wsimito("detect", *fields, "--mpp", "0.2456", "-o", out, "--model", busy_model, "--quiet")
    assert result.returncode == 0, result.stderr
    rows = read_csv(out / "counts.csv")
    assert [r["slide"] for r in rows] == ["A00_00", "A03_00"]
    assert all(r["mpp_source"] == "--mpp" and r["status"] == "ok" for r in rows)
    # detect + evaluate end to end against the real labels: the pipeline and the counts, not a score
    scored = wsimito("evaluate", out, "--truth", data / "mitos2012-icpr/centroids.csv", "--json")
    assert scored.returncode == 0, scored.stderr
    pooled = json.loads(scored.stdout)
    truth_points = sum(1 for line in (data / "mitos2012-icpr/centroids.csv").read_text().splitlines()[1:]
                       if line.split(",")[0] in ("A00_00", "A03_00"))
    assert pooled["tp"] + pooled["fn"] == truth_points
    assert pooled["tp"] + pooled["fp"] == sum(int(r["mitoses"]) for r in rows)
    tcga = data / "histolab-test-slides/tcga-cr-7395-01a-01-ts1.svs"
    assert wsimito("detect", tcga, "-o", tmp_path / "no-mpp", "--model", tiny_model, "--quiet").returncode == 1
    assert "--mpp" in read_csv(tmp_path / "no-mpp/counts.csv")[0]["error"]
    result = wsimito("detect", tcga, "--mpp", "0.5", "-o", tmp_path / "tcga", "--model", tiny_model, "--quiet")
    assert result.returncode == 0, result.stderr


def test_same_detections_whatever_the_workers(data, busy_model, tmp_path):
    for workers in (1, 3):
        result = wsimito("detect", SAMPLE, "-o", tmp_path / f"w{workers}", "--model", busy_model,
                         "--workers", workers, "--quiet")
        assert result.returncode == 0, result.stderr
    one = read_csv(tmp_path / "w1/detections.csv")
    three = read_csv(tmp_path / "w3/detections.csv")
    assert len(one) == len(three) > 0
    for a, b in zip(one, three):
        columns = "x y score".split()
        assert [float(a[k]) for k in columns] == pytest.approx([float(b[k]) for k in columns], abs=1e-4)


def test_killed_run_finishes_on_rerun_with_the_same_results(busy_model, tmp_path):
    from wsimito.synth import write_fields

    images = write_fields(tmp_path / "fields", n=6, size=1024, mpp=0.5, seed=11)
    args = [*images, "--mpp", "0.5", "--model", busy_model, "--quiet", "--workers", "1"]
    clean = wsimito("detect", *args, "-o", tmp_path / "clean")
    assert clean.returncode == 0, clean.stderr
    out = tmp_path / "killed"
    process = subprocess.Popen(["wsimito", "detect", *map(str, args), "-o", str(out)], start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("*.zarr"))) < 2:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished_before = len(list(out.glob("*.zarr")))
    assert 2 <= finished_before < len(images), "the kill should land mid-batch"
    rerun = wsimito("detect", *args, "-o", out)
    assert rerun.returncode == 0, rerun.stderr
    assert len(read_csv(tmp_path / "clean/detections.csv")) > 0
    assert read_csv(out / "detections.csv") == read_csv(tmp_path / "clean/detections.csv")
    drop = lambda rows: [{k: v for k, v in r.items() if k != "runtime_s"} for r in rows]  # noqa: E731
    assert drop(read_csv(out / "counts.csv")) == drop(read_csv(tmp_path / "clean/counts.csv"))


def test_core_ownership_and_border_merge():
    tile = Tile(row=0, col=1, x=100.0, y=0.0, size=64, halo=8, mpp=0.5, scale_x=2.0, scale_y=2.0)
    # core in level-0: x 116..212, y 16..112; boxes in tile pixels
    boxes = np.array([[4, 4, 10, 10], [20, 20, 30, 30], [50, 50, 62, 62]], float)
    table = tile_to_slide(tile, boxes, np.array([0.9, 0.8, 0.7]))
    assert len(table) == 1 and table[0, :3] == pytest.approx([150, 50, 0.8])
    pair = np.array([[100, 100, 0.6, 90, 90, 110, 110], [103, 100, 0.9, 93, 90, 113, 110], [200, 200, 0.5, 0, 0, 1, 1]])
    merged = merge_duplicates(pair, radius_px=5)
    assert len(merged) == 2 and 0.9 in merged[:, 2] and 0.6 not in merged[:, 2]
    assert np.array_equal(merge_duplicates(pair[::-1], 5), merged)


def test_shards_are_a_stable_partition():
    names = [f"slide-{i}" for i in range(50)]
    shards = [[n for n in names if in_shard(n, (i, 3))] for i in range(3)]
    assert sorted(sum(shards, [])) == sorted(names) and all(shards)
    assert [n for n in reversed(names) if in_shard(n, (1, 3))] == list(reversed(shards[1]))


def test_a_rerun_answers_the_question_asked_never_with_stale_counts(data, tiny_model, busy_model, tmp_path):
    """Same folder, another threshold: the stored candidates are counted again (no network run). Same folder,
    another model: refused with a one-line error naming --overwrite, never the old counts."""
    field = data / "mitos2012-icpr/images/A00_00.jpg"
    out = tmp_path / "out"
    first = wsimito("detect", field, "--mpp", "0.2456", "-o", out, "--model", busy_model, "--threshold", "0",
                    "--quiet")
    assert first.returncode == 0, first.stderr
    candidates = zarr.open_group(str(out / "A00_00.zarr"), mode="r")["detections"][:]
    assert len(candidates) > 2  # the busy model scores plenty
    cut = float(np.median(candidates[:, 2]))
    again = wsimito("detect", field, "--mpp", "0.2456", "-o", out, "--model", busy_model, "--threshold", cut)
    assert again.returncode == 0, again.stderr
    assert "no network run" in again.stderr
    row = read_csv(out / "counts.csv")[0]
    assert float(row["threshold"]) == pytest.approx(cut)
    assert int(row["mitoses"]) == int((candidates[:, 2] >= cut).sum()) < len(candidates)
    assert len(read_csv(out / "detections.csv")) == int(row["mitoses"])
    other = wsimito("detect", field, "--mpp", "0.2456", "-o", out, "--model", tiny_model, "--quiet")
    assert other.returncode == 1 and "--overwrite" in other.stderr and "Traceback" not in other.stderr
    assert read_csv(out / "counts.csv")[0]["status"] == "error"
    redone = wsimito("detect", field, "--mpp", "0.2456", "-o", out, "--model", tiny_model, "--overwrite", "--quiet")
    assert redone.returncode == 0, redone.stderr
    assert read_csv(out / "counts.csv")[0]["status"] == "ok"
