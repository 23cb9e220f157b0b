"""Nothing silent (#16): tiles a reader cannot produce, images with no tissue, settings that cannot work.

The damaged slides are copies of the real CMU-1-Small-Region.svs (Aperio, 240 px JPEG tiles) patched the way
OpenSlide's own test suite patches its slides: one tissue tile's TileByteCounts entry set to 0 (a zero-length
tile) or one tile's JPEG bytes overwritten with garbage (a corrupt tile); with them the rest of the fault
catalogue: a truncated file, header only, empty, a text file named .svs, a name with spaces and non-ASCII
characters, a directory given as a slide.
"""

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from wsimito.config import TissueConfig
from wsimito.slide import open_slide
from wsimito.tiling import Tile
from wsimito.tissue import detect_tissue
from wsimito.unread import unread_tissue

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "wsimito/data/CMU-1-Small-Region.svs"
TILE = 240  # the sample's level-0 JPEG tile side
ZERO, CORRUPT = (6, 5), (6, 4)  # (row, col) of two tissue tiles; CORRUPT is the centre, where open() probes


def wsimito(*args, **kwargs):
    return subprocess.run(["wsimito", *map(str, args)], capture_output=True, text=True, **kwargs)


def read_csv(path):
    with open(path, newline="") as fh:
        return {row["slide"]: row for row in csv.DictReader(fh)}


def damaged_copy(folder: Path, kind: str) -> Path:
    """A copy of the sample with one level-0 tile damaged: ``zero`` (no bytes stored) or ``corrupt`` (garbage)."""
    with tifffile.TiffFile(SAMPLE) as tif:
        page = tif.pages[0]
        columns = -(-page.imagewidth // page.tilewidth)
        assert page.tilewidth == TILE and tif.byteorder == "<" and page.tags["TileByteCounts"].dtype == 4
        row, col = ZERO if kind == "zero" else CORRUPT
        index = row * columns + col
        offset, count = page.dataoffsets[index], page.databytecounts[index]
        counts_at = page.tags["TileByteCounts"].valueoffset
        tile = page.asarray()[row * TILE : (row + 1) * TILE, col * TILE : (col + 1) * TILE]
    assert tile.mean() < 200, "the damaged tile must hold tissue"
    path = folder / f"{kind}.svs"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(SAMPLE, path)
    with open(path, "r+b") as fh:
        if kind == "zero":
            fh.seek(counts_at + 4 * index)
            fh.write((0).to_bytes(4, "little"))
        else:
            fh.seek(offset)
            fh.write(np.random.default_rng(0).integers(0, 256, count, dtype=np.uint8).tobytes())
    return path


def tile_box(row_col):
    row, col = row_col
    return col * TILE, row * TILE, (col + 1) * TILE, (row + 1) * TILE


@pytest.mark.parametrize("reader", ["openslide", "tiffslide"])
@pytest.mark.parametrize("kind", ["zero", "corrupt"])
def test_each_reader_marks_the_damaged_tile_and_reads_the_rest(tmp_path, reader, kind):
    path = damaged_copy(tmp_path, kind)
    x0, y0, x1, y1 = tile_box(ZERO if kind == "zero" else CORRUPT)
    with open_slide(SAMPLE, reader=reader) as intact, open_slide(path, reader=reader) as slide:
        # a level-0 window of 3 x 3 JPEG tiles centred on the damaged one
        region = slide.read_region_checked(x0 - TILE, y0 - TILE, 3 * TILE, 3 * TILE, slide.mpp)
        truth = intact.read_region(x0 - TILE, y0 - TILE, 3 * TILE, 3 * TILE, slide.mpp)
        assert region.unread is not None and region.problem
        lost = np.zeros(region.unread.shape, bool)
        lost[TILE : 2 * TILE, TILE : 2 * TILE] = True
        assert region.unread[lost].all(), "every pixel of the damaged tile is marked"
        # salvaged in parts down to 32 px: at most that much around the tile is given up too
        near = np.zeros_like(lost)
        near[TILE - 32 : 2 * TILE + 32, TILE - 32 : 2 * TILE + 32] = True
        assert not region.unread[~near].any()
        assert (region.pixels[region.unread] == 255).all(), "lost pixels are white, never black"
        assert np.array_equal(region.pixels[~region.unread], truth[~region.unread]), "the rest reads as intact"
        # a read after the failure still works (OpenSlide's errors are sticky: the handle was replaced)
        assert slide.read_region_checked(0, 0, 64, 64, slide.mpp).unread is None
        # the thumbnail the tissue mask uses marks it too, and it counts as tissue to be tiled
        tissue = detect_tissue(slide, TissueConfig())
        assert tissue.contains(np.array([(x0 + x1) / 2]), np.array([(y0 + y1) / 2]))[0]
        # a model tile over it reports the tissue it lost, in level-0 coordinates
        tile = Tile(row=0, col=0, x=x0 - 64.0, y=y0 - 64.0, size=368, halo=32, mpp=slide.mpp, scale_x=1.0,
                    scale_y=1.0)
        unread = unread_tissue(tile, tile.read_checked(slide), tissue)
        assert unread is not None and unread.problem
        assert unread.box[0] <= x0 + 1 and unread.box[1] <= y0 + 1 and unread.box[2] >= x1 - 1
        assert unread.mm2 == pytest.approx((TILE * slide.mpp / 1000) ** 2, rel=0.35)
    with open_slide(SAMPLE, reader=reader) as intact:
        assert intact.read_whole_checked(8.0).unread is None


def fault_catalogue(folder: Path) -> dict[Path, tuple[str, str]]:
    """Broken inputs made from the sample, as OpenSlide's test suite makes them: path -> (status, message part)."""
    folder.mkdir(parents=True, exist_ok=True)
    sample = SAMPLE.read_bytes()
    with tifffile.TiffFile(SAMPLE) as tif:
        level0_end = min(tif.pages[1].dataoffsets)  # level 0 (tiles and IFD) comes first; then label, macro, ...
        level0_ifd = tif.pages[0].offset
    faults = {
        folder / "truncated.svs": (sample[:level0_ifd // 2], "error", "not a slide or image"),
        folder / "truncated-after-level-0.svs": (sample[:level0_end], "ok", ""),  # only associated images lost
        folder / "header-only.svs": (sample[:8], "error", "not a slide or image"),
        folder / "empty.svs": (b"", "error", "not a slide or image"),
        folder / "text.svs": (b"not a slide, a text file named .svs\n", "error", "not a slide or image"),
        folder / "a name with spaces é ü 中.svs": (sample, "ok", ""),
    }
    for path, (content, _, _) in faults.items():
        path.write_bytes(content)
    (folder / "a folder.svs").mkdir()
    expected = {path: (status, message) for path, (_, status, message) in faults.items()}
    return {**expected, folder / "a folder.svs": ("error", "is a directory")}


def test_fault_catalogue_and_damaged_slides_partial_with_the_rest_counted(busy_model, tmp_path):
    """Each fault has its status, message and exit code; none prints a traceback; none is a plain ok with less
    tissue than it has. The damaged tiles: partial, the rest of the slide counted as on the intact one."""
    damaged = [damaged_copy(tmp_path / "slides", kind) for kind in ("zero", "corrupt")]
    faults = fault_catalogue(tmp_path / "faults")
    out = tmp_path / "out"
    result = wsimito("detect", SAMPLE, *damaged, *faults, "-o", out, "--model", busy_model, "--quiet")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    rows = read_csv(out / "counts.csv")
    intact = rows["CMU-1-Small-Region"]
    assert intact["status"] == "ok" and intact["error"] == ""
    assert int(intact["unread_tiles"]) == 0 and float(intact["unread_mm2"]) == 0
    for path, (status, message) in faults.items():
        row = rows[path.stem]
        assert row["status"] == status and message in row["error"] and row["path"] == str(path)
        if status == "ok":  # the whole slide, as the intact one: no tissue silently missing
            assert [row[k] for k in ("tissue_mm2", "mitoses", "tiles")] == [
                intact[k] for k in ("tissue_mm2", "mitoses", "tiles")]
        else:
            assert f"wsimito: error: {path}: " in result.stderr
    for path in damaged:
        assert f"wsimito: partial: {path}: " in result.stderr
    detections = {}
    for row in csv.DictReader(open(out / "detections.csv", newline="")):
        detections.setdefault(row["slide"], []).append((float(row["x"]), float(row["y"])))
    for kind, where in (("zero", ZERO), ("corrupt", CORRUPT)):
        row = rows[kind]
        x0, y0, x1, y1 = tile_box(where)
        assert row["status"] == "partial"
        assert int(row["unread_tiles"]) >= 1 and int(row["tiles"]) == int(intact["tiles"])
        tile_mm2 = (TILE * float(row["mpp"]) / 1000) ** 2
        assert tile_mm2 * 0.8 < float(row["unread_mm2"]) < tile_mm2 * 4
        # the density is over the tissue examined, which is the intact tissue less what was lost
        assert float(row["tissue_mm2"]) == pytest.approx(float(intact["tissue_mm2"]) - float(row["unread_mm2"]),
                                                         abs=0.02)
        assert float(row["mitoses_per_mm2"]) == pytest.approx(int(row["mitoses"]) / float(row["tissue_mm2"]))
        assert "tile row" in row["error"] and "level-0 box" in row["error"] and str(out.parent) in row["error"]
        # every detection away from the damaged tile is found as on the intact slide: the other tiles counted
        kept = away(detections["CMU-1-Small-Region"], (x0, y0, x1, y1))
        assert len(kept) > 0 and away(detections.get(kind, []), (x0, y0, x1, y1)) == pytest.approx(kept, abs=1e-3)
        # QuPath sees the lost area; the Zarr lists the tiles
        features = json.loads((out / f"{kind}.geojson").read_text())["features"]
        unread = [f for f in features if f["properties"]["classification"]["name"] == "Unread"]
        assert len(unread) == 1 and unread[0]["properties"]["objectType"] == "annotation"
        assert unread[0]["properties"]["measurements"]["area_mm2"] == pytest.approx(float(row["unread_mm2"]))
        boxes = [np.array(polygon[0]) for polygon in unread[0]["geometry"]["coordinates"]]
        centre = ((x0 + x1) / 2, (y0 + y1) / 2)
        assert any(b[:, 0].min() <= centre[0] <= b[:, 0].max() and b[:, 1].min() <= centre[1] <= b[:, 1].max()
                   for b in boxes)
        attrs = zarr.open_group(str(out / f"{kind}.zarr"), mode="r").attrs
        listed = attrs["unread_tiles"]
        assert len(listed) == int(row["unread_tiles"]) and {"row", "col", "box", "mm2", "problem"} <= set(listed[0])
        assert attrs["counts_row"]["status"] == "partial"

    # a rerun reuses the finished results and still says partial; so does another threshold (no network run)
    first = rows["zero"]
    again = wsimito("detect", SAMPLE, *damaged, "-o", out, "--model", busy_model, "--quiet")
    assert again.returncode == 1 and read_csv(out / "counts.csv")["zero"]["status"] == "partial"
    other = wsimito("detect", *damaged, "-o", out, "--model", busy_model, "--threshold", "0.9")
    assert other.returncode == 1 and "no network run" in other.stderr
    row = read_csv(out / "counts.csv")["zero"]
    assert row["status"] == "partial" and float(row["threshold"]) == 0.9
    assert (row["unread_tiles"], row["unread_mm2"], row["tissue_mm2"]) == (
        first["unread_tiles"], first["unread_mm2"], first["tissue_mm2"])

    # merge-reports lists a partial slide as a problem and exits non-zero, never as ok
    shard = wsimito("detect", SAMPLE, damaged[0], "-o", out, "--model", busy_model, "--shard", "0/1", "--quiet")
    assert shard.returncode == 1
    merged = wsimito("merge-reports", out)
    assert merged.returncode == 1 and "zero" in merged.stderr and "tiles could not be read" in merged.stderr
    assert read_csv(out / "counts.csv")["zero"]["status"] == "partial"


def test_a_pyramid_damaged_at_level_0_only_is_partial_with_both_readers(tiny_model, tmp_path):
    """The usual case on real scans: the thumbnail level is whole, so the mask sees tissue, and the tile read at
    level 0 finds the hole (OpenSlide: transparent; tiffslide: black, found from the TIFF's byte counts)."""
    from conftest import smooth_texture, write_pyramid

    from wsimito.bundle import MitosisModel, bundle_sha256
    from wsimito.config import load_config
    from wsimito.pipeline import detect_slide

    path = write_pyramid(tmp_path / "pyramid.tif", smooth_texture(1024, 1024, seed=1), mpp=0.5, levels=3, tile=128)
    with tifffile.TiffFile(path) as tif:
        counts_at = tif.pages[0].tags["TileByteCounts"].valueoffset
    with open(path, "r+b") as fh:  # level-0 tile (row 1, col 1) of 8 x 8, stored with no bytes: in one tile's core
        fh.seek(counts_at + 4 * (1 * 8 + 1))
        fh.write((0).to_bytes(4, "little"))
    model = MitosisModel.load(tiny_model)
    config = load_config(None, {"tissue.whole": True})
    for reader in ("openslide", "tiffslide"):
        with open_slide(path, reader=reader) as slide:
            assert slide.read_whole_checked(8.0).unread is None  # level 2 is whole
            assert slide.read_region_checked(128, 128, 128, 128, 0.5).unread.all()
    result = detect_slide(path, tmp_path / "out", model, bundle_sha256(tiny_model), config, 0.5, workers=2)
    row = result.row
    assert result.status == row["status"] == "partial" and row["unread_tiles"] == 1
    assert row["unread_mm2"] == pytest.approx((128 * 0.5 / 1000) ** 2, rel=0.05)
    assert row["tissue_mm2"] == pytest.approx((1024 * 0.5 / 1000) ** 2 - row["unread_mm2"], rel=0.01)
    assert "tile row 0 col 0, level-0 box (128, 128)-(256, 256)" in row["error"]


def away(points, box, margin=200):
    """The points more than ``margin`` level-0 pixels from ``box``, sorted."""
    x0, y0, x1, y1 = box
    return sorted(p for p in points if not (x0 - margin < p[0] < x1 + margin and y0 - margin < p[1] < y1 + margin))


def mitosis_crop(data, folder: Path, side: int) -> Path:
    """A ``side`` px crop of a MITOS 2012 field centred on a labelled mitosis, as a PNG without a resolution."""
    field = np.asarray(Image.open(data / "mitos2012-icpr/images/A00_00.jpg").convert("RGB"))
    x, y = 2008, 929  # a mitosis of A00_00 (centroids.csv)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"crop{side}.png"
    Image.fromarray(field[y - side // 2 : y + side // 2, x - side // 2 : x + side // 2]).save(path)
    return path


def test_an_image_without_tissue_is_said_and_whole_image_processes_it(data, busy_model, tmp_path):
    crop = mitosis_crop(data, tmp_path / "crops", 128)
    result = wsimito("detect", crop, "--mpp", "0.25", "-o", tmp_path / "out", "--model", busy_model, "--quiet")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    row = read_csv(tmp_path / "out/counts.csv")["crop128"]
    assert row["status"] == "no-tissue" and int(row["tiles"]) == 0 and float(row["tissue_mm2"]) == 0
    assert "32 x 32 µm" in row["error"] and "--whole-image" in row["error"] and "min_area_um2" in row["error"]
    assert "wsimito: no-tissue: " in result.stderr
    # into the same folder: a result that examined nothing is redone with the new setting, and a note says so
    whole = wsimito("detect", crop, "--mpp", "0.25", "-o", tmp_path / "out", "--model", busy_model,
                    "--whole-image", "--quiet")
    assert whole.returncode == 0, whole.stderr
    assert "found no tissue" in whole.stderr and "done again" in whole.stderr
    row = read_csv(tmp_path / "out/counts.csv")["crop128"]
    assert row["status"] == "ok" and int(row["tiles"]) >= 1
    assert float(row["tissue_mm2"]) == pytest.approx((128 * 0.25 / 1000) ** 2, rel=0.1)


def settings_run(tmp_path, *args, config=None, env=None):
    out = tmp_path / "out"
    extra = []
    if config is not None:
        path = tmp_path / "run.yaml"
        path.write_text(config)
        extra = ["--config", path]
    result = wsimito("detect", SAMPLE, "-o", out, *extra, *args, env=env)
    return result, out


@pytest.mark.parametrize("config, setting", [
    ("tiling:\n  tile_size: 511\n", "tiling.tile_size 511"),  # the tiny net takes multiples of 2
    ("tiling:\n  tile_size: 64\n  halo: 32\n", "tiling.tile_size 64"),
    ("detector:\n  threshold: 1.5\n", "detector.threshold 1.5"),
])
def test_settings_that_cannot_work_fail_first_in_one_line(busy_model, tmp_path, config, setting):
    result, out = settings_run(tmp_path, "--model", busy_model, config=config)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wsimito: error: ") and setting in lines[0]
    assert not (out / "counts.csv").exists(), "no slide processed"


def test_threshold_and_device_are_checked_before_any_slide(busy_model, tmp_path):
    result, out = settings_run(tmp_path, "--model", busy_model, "--threshold", "1.5")
    assert result.returncode == 2 and "--threshold" in result.stderr and not out.exists()
    result, out = settings_run(tmp_path, "--model", busy_model, "--device", "tpu")
    assert result.returncode == 2 and "--device" in result.stderr and not out.exists()
    hidden = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # the same on a GPU machine: torch sees none
    result, out = settings_run(tmp_path, "--model", busy_model, "--device", "cuda", env=hidden)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == "wsimito: error: device 'cuda': torch sees no CUDA GPU" and not out.exists()
