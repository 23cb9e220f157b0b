"""The synthetic H&E generator: fields with exact masks, and pyramidal slides that real readers open."""

import csv
import json

import cv2
import numpy as np
import openslide
import pytest
import tiffslide

from wsimito import synth
from wsimito.synth.layout import slide_scene


def _gray(rgb):
    return rgb.astype(np.float64).mean(-1)


# ---- fields


@pytest.fixture(scope="module")
def field():
    return synth.make_field((320, 384), mpp=0.25, seed=3, n_mitoses=3)


def test_field_types_and_shapes(field):
    assert field.image.shape == (320, 384, 3) and field.image.dtype == np.uint8
    assert field.mask.shape == (320, 384) and field.mask.dtype == np.uint8
    assert set(np.unique(field.mask)) == {0, 1}
    assert field.centroids.shape == (3, 2) and field.centroids.dtype == np.float64
    assert field.mpp == 0.25


def test_mitoses_are_dark_and_where_the_centroids_say(field):
    gray = _gray(field.image)
    assert gray[field.mask == 1].mean() < gray.mean() - 60
    rows, cols = np.nonzero(field.mask)
    pixels = np.stack([cols, rows], 1).astype(float)
    # Every mask pixel belongs to the nearest centroid, which is the mean of its pixels, within 8 µm.
    nearest = np.argmin(((pixels[:, None] - field.centroids[None]) ** 2).sum(-1), 1)
    for k, centroid in enumerate(field.centroids):
        mine = pixels[nearest == k]
        assert len(mine) > (2.0 / 0.25) ** 2  # at least ~4 µm² of chromatin
        np.testing.assert_allclose(mine.mean(0), centroid, atol=1e-6)
        assert np.hypot(*(mine - centroid).T).max() < 8.0 / 0.25


def test_field_has_dark_hard_negatives_outside_the_mask():
    # Lymphocytes and pyknotic nuclei are as dark as mitoses: darkness alone must not find the mask.
    dark_elsewhere = mitosis_pixels = 0
    for seed in range(6):
        f = synth.make_field((320, 384), seed=seed, n_mitoses=1)
        gray = _gray(f.image)
        dark_elsewhere += int(((gray < np.median(gray[f.mask == 1])) & (f.mask == 0)).sum())
        mitosis_pixels += int(f.mask.sum())
    assert dark_elsewhere > 0.1 * mitosis_pixels


def test_fields_are_reproducible_by_seed():
    a = synth.make_field((200, 240), seed=7)
    b = synth.make_field((200, 240), seed=7)
    c = synth.make_field((200, 240), seed=8)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert np.array_equal(a.centroids, b.centroids)
    assert not np.array_equal(a.image, c.image)


def test_no_mitoses_and_too_many():
    f = synth.make_field((128, 128), n_mitoses=0)
    assert f.mask.sum() == 0 and f.centroids.shape == (0, 2)
    assert synth.make_field((48, 48)).centroids.shape == (0, 2)  # the drawn count fits what fits
    with pytest.raises(ValueError, match="at most"):
        synth.make_field((128, 128), n_mitoses=500)


def test_sizes_are_physical():
    # The same scene at 0.5 µm/px: mitoses cover a quarter of the pixels they cover at 0.25 µm/px.
    def mean_area_um2(mpp):
        fields = [synth.make_field((int(96 / mpp),) * 2, mpp=mpp, seed=s, n_mitoses=2) for s in range(3)]
        return np.mean([f.mask.sum() * mpp * mpp / len(f.centroids) for f in fields])

    assert 20 < mean_area_um2(0.25) < 60
    assert 0.6 < mean_area_um2(0.5) / mean_area_um2(0.25) < 1.6


def test_write_fields_layout_and_bytes(tmp_path):
    paths = synth.write_fields(tmp_path / "a", n=2, size=160, seed=5)
    synth.write_fields(tmp_path / "b", n=2, size=160, seed=5)
    assert [p.name for p in paths] == ["field_000.png", "field_001.png"]
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == ["centroids.csv", "field_000.png", "field_000_mask.png", "field_001.png", "field_001_mask.png",
                     "fields.json"]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    image = cv2.imread(str(paths[0]), cv2.IMREAD_UNCHANGED)
    mask = cv2.imread(str(tmp_path / "a" / "field_000_mask.png"), cv2.IMREAD_UNCHANGED)
    assert image.shape == (160, 160, 3) and mask.shape == (160, 160)
    assert set(np.unique(mask)) <= {0, 255} and mask.max() == 255
    with open(tmp_path / "a" / "centroids.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["image", "x", "y"]
    meta = json.loads((tmp_path / "a" / "fields.json").read_text())
    assert meta["mpp"] == 0.25 and meta["seed"] == 5
    assert len(rows) - 1 == sum(f["mitoses"] for f in meta["fields"]) > 0
    first = [(float(x), float(y)) for stem, x, y in rows[1:] if stem == "field_000"]
    ys, xs = np.nonzero(mask)
    for x, y in first:
        assert np.hypot(xs - x, ys - y).min() < 2


# ---- slides

SLIDE = dict(size=(3000, 2500), mpp=0.25, seed=11, tile=256, mitoses_per_mm2=40.0)
SMALL = dict(size=(1400, 1800), mpp=0.25, seed=4, tile=256, mitoses_per_mm2=40.0, pen=True, border=True)


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slides")
    generic = synth.write_slide(folder / "generic.tiff", flavour="generic", **SLIDE)
    aperio = synth.write_slide(folder / "aperio.svs", flavour="aperio", **SMALL)
    return generic, aperio


def test_slide_files_and_truth(slides):
    generic, aperio = slides
    folder = generic.path.parent
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["generic.tiff", "generic.mitoses.csv", "generic.tissue.png", "generic.truth.json",
         "aperio.svs", "aperio.mitoses.csv", "aperio.tissue.png", "aperio.truth.json"])
    meta = json.loads(generic.truth_json.read_text())
    assert meta["mpp"] == 0.25 and meta["size"] == [3000, 2500] and meta["seed"] == 11
    assert meta["tissue_downsample"] == generic.tissue_downsample
    mask = cv2.imread(str(generic.tissue_png), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (-(-3000 // generic.tissue_downsample), -(-2500 // generic.tissue_downsample))
    assert np.array_equal(mask > 0, generic.tissue_mask)
    area = (mask > 0).sum() * (generic.tissue_downsample * 0.25) ** 2 / 1e6
    assert meta["tissue_area_mm2"] == pytest.approx(area, rel=1e-3)
    assert 0.25 < area / (3000 * 2500 * 0.25**2 / 1e6) < 0.65
    with open(generic.mitoses_csv, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["x", "y"]
    np.testing.assert_allclose(np.array(rows[1:], float), generic.mitoses, atol=0.01)
    assert len(generic.mitoses) == meta["mitoses"] >= 3


@pytest.mark.parametrize("reader", ["openslide", "tiffslide"])
def test_readers_see_levels_and_mpp(slides, reader):
    generic, aperio = slides
    for truth, vendor, dims in [
        (generic, "generic-tiff", [(2500, 3000), (1250, 1500), (625, 750)]),
        (aperio, "aperio", [(1800, 1400), (900, 700)]),
    ]:
        if reader == "openslide":
            slide = openslide.OpenSlide(truth.path)
            prefix = "openslide"
            assert slide.properties["openslide.vendor"] == vendor
        else:
            slide = tiffslide.TiffSlide(truth.path)
            prefix = "tiffslide"
        assert [tuple(d) for d in slide.level_dimensions] == dims
        assert float(slide.properties[f"{prefix}.mpp-x"]) == pytest.approx(0.25)
        assert float(slide.properties[f"{prefix}.mpp-y"]) == pytest.approx(0.25)
        assert [(w, h) for h, w in truth.levels] == dims
    assert "thumbnail" in openslide.OpenSlide(aperio.path).associated_images
    description = openslide.OpenSlide(aperio.path).properties["tiff.ImageDescription"]
    assert description.startswith("Aperio Image Library") and "|MPP = 0.25|AppMag = 40" in description


def test_slide_mitoses_lie_in_tissue_and_are_dark(slides):
    generic, _ = slides
    slide = openslide.OpenSlide(generic.path)
    ds = generic.tissue_downsample
    level0 = np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert("RGB"))
    tissue_gray = _gray(level0)[np.kron(generic.tissue_mask, np.ones((ds, ds), bool))[:3000, :2500]].mean()
    for x, y in generic.mitoses:
        assert generic.tissue_mask[int(y) // ds, int(x) // ds]
        # Anaphase centroids fall between two bars: look at the darkest pixels within 4 µm.
        window = _gray(level0[int(y) - 16:int(y) + 17, int(x) - 16:int(x) + 17])
        assert np.sort(window.ravel())[:20].mean() < tissue_gray - 70


def test_slide_has_no_seams(slides):
    generic, _ = slides
    scene = slide_scene(*SLIDE["size"], SLIDE["mpp"], SLIDE["seed"], SLIDE["mitoses_per_mm2"], False, False)
    # A window around the tile corner nearest the first mitosis, rendered whole and as four parts.
    x, y = (int(v) // 256 * 256 for v in generic.mitoses[0])
    box = (x - 64, y - 64, 128, 128)
    whole = scene.render(*box)[0]
    top = np.concatenate([scene.render(x - 64, y - 64, 64, 64)[0], scene.render(x, y - 64, 64, 64)[0]], 1)
    bottom = np.concatenate([scene.render(x - 64, y, 64, 64)[0], scene.render(x, y, 64, 64)[0]], 1)
    assert np.array_equal(whole, np.concatenate([top, bottom], 0))
    # What OpenSlide reads across the tile corner is that rendering, up to JPEG error, and no worse at the seam.
    read = np.asarray(openslide.OpenSlide(generic.path).read_region(box[:2], 0, box[2:]).convert("RGB"))
    error = np.abs(read.astype(int) - whole.astype(int)).mean(-1)
    assert error.mean() < 4
    assert error[:, 62:66].mean() < 2 * error.mean() + 1 and error[62:66].mean() < 2 * error.mean() + 1


def test_lower_levels_average_level_zero(slides):
    generic, _ = slides
    slide = openslide.OpenSlide(generic.path)
    level0 = np.asarray(slide.read_region((1000, 1000), 0, (512, 512)).convert("RGB")).astype(float)
    level1 = np.asarray(slide.read_region((1000, 1000), 1, (256, 256)).convert("RGB")).astype(float)
    expected = level0.reshape(256, 2, 256, 2, 3).mean((1, 3))
    assert np.abs(level1 - expected).mean() < 4


def test_glass_shortcut_matches_full_render():
    # Tiles the coarse tissue map calls empty must render as if the tissue had been drawn: nothing reaches them.
    scene = slide_scene(1400, 1800, 0.25, 4, 40.0, False, False)
    checked = 0
    for y in range(0, 1400, 128):
        for x in range(0, 1800, 128):
            near = scene.tissue.touches((x - 160) * 0.25, (y - 160) * 0.25, (x + 288) * 0.25, (y + 288) * 0.25)
            inside = scene.tissue.touches(x * 0.25 - 2, y * 0.25 - 2, (x + 128) * 0.25 + 2, (y + 128) * 0.25 + 2)
            if near and not inside:
                fast = scene.render(x, y, 128, 128)[0]
                touches, scene.tissue.touches = scene.tissue.touches, lambda *box: True
                full = scene.render(x, y, 128, 128)[0]
                scene.tissue.touches = touches
                assert np.array_equal(fast, full)
                checked += 1
    assert checked > 0


def test_pen_and_border(slides):
    _, aperio = slides
    slide = openslide.OpenSlide(aperio.path)
    rgb = np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert("RGB")).astype(int)
    assert (rgb[:, -20:] < 8).all()  # the scanner's black strip on the right
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    ink = ((b - r > 60) & (b > g)) | ((g - r > 50) & (g - b > 30))
    assert ink.sum() > 5000
    x, y = (aperio.mitoses.T // aperio.tissue_downsample).astype(int)
    assert aperio.tissue_mask[y, x].all()


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="flavour"):
        synth.write_slide(tmp_path / "x.tiff", (600, 600), flavour="hamamatsu")
    with pytest.raises(ValueError, match="tile"):
        synth.write_slide(tmp_path / "x.tiff", (600, 600), tile=100)
    assert list(tmp_path.iterdir()) == []
