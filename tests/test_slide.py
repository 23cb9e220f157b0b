"""Opening real slides and images, resolving mpp, and reading regions at a physical resolution."""

import cv2
import numpy as np
import pytest
import tifffile
from conftest import smooth_texture, write_pyramid

from wsimito.errors import SlideError
from wsimito.slide import open_slide


# --- real files ---------------------------------------------------------------------------
def test_aperio_svs_with_mpp(data):
    with open_slide(data / "cmu1-small-region-svs/CMU-1-Small-Region.svs") as slide:
        assert slide.reader == "openslide"
        assert slide.vendor == "aperio"
        assert slide.dimensions == (2220, 2967)
        assert slide.mpp == pytest.approx(0.499)
        assert "Aperio" in slide.mpp_source
        tile = slide.read_region(1000, 1000, 64, 64, 0.499)
        assert tile.shape == (64, 64, 3) and tile.dtype == np.uint8
        assert tile.mean() < 230  # tissue there, not glass


def test_jpeg2000_svs_without_mpp_needs_override(data):
    path = data / "histolab-test-slides/tcga-cr-7395-01a-01-ts1.svs"
    with pytest.raises(SlideError) as err:
        open_slide(path)
    assert str(path) in str(err.value) and "--mpp" in str(err.value)
    with open_slide(path, mpp=0.5) as slide:
        assert slide.mpp_source == "--mpp"
        assert slide.level_dimensions == ((4443, 3567), (2221, 1783))
        # JPEG 2000 tiles decode (openslide-bin ships OpenJPEG)
        assert slide.read_region(2000, 1500, 32, 32, 1.0).std() > 5


@pytest.mark.parametrize(
    "name, problem",
    [
        ("histolab-test-slides/broken.svs", "not a slide or image"),
        ("openslide-python-fixtures/unopenable.tiff", "Unsupported TIFF compression"),
        ("openslide-python-fixtures/unreadable.svs", "Bogus marker length"),
        ("openslide-python-fixtures/PROVENANCE.md", "not a slide or image"),
        ("no-such-file.svs", "file not found"),
        ("mitos2012-icpr", "is a directory"),
    ],
)
def test_bad_files_give_one_clear_error(data, name, problem):
    with pytest.raises(SlideError) as err:
        open_slide(data / name, mpp=0.25)
    message = str(err.value)
    assert str(data / name) in message and problem in message
    assert "\n" not in message


def test_plain_jpeg_field_needs_mpp(data):
    path = data / "mitos2012-icpr/images/A00_00.jpg"
    with pytest.raises(SlideError, match="unknown resolution"):
        open_slide(path)
    with open_slide(path, mpp=0.2456) as slide:
        assert (slide.reader, slide.vendor, slide.dimensions) == ("image", "jpeg", (2084, 2084))
        whole = slide.read_region(0, 0, 2084, 2084, 0.2456)
        from PIL import Image

        assert np.array_equal(whole, np.asarray(Image.open(path).convert("RGB")))


def test_72_dpi_tags_are_not_a_resolution(data):
    with pytest.raises(SlideError, match=r"352\.8 µm/px \(72 dpi\)"):
        open_slide(data / "openslide-python-fixtures/boxes.tiff")


def test_grayscale_bmp_and_dicom(data):
    with open_slide(data / "mitos2012-multispectral-sample/M00_01a_0606.bmp", mpp=0.185) as slide:
        assert slide.read_region(0, 0, 8, 8, 0.185).shape == (8, 8, 3)
    with open_slide(data / "openslide-python-fixtures/boxes_0.dcm") as slide:
        assert slide.vendor == "dicom" and slide.mpp == pytest.approx(0.499)


# --- synthetic pyramids: exact resampling -------------------------------------------------
@pytest.fixture(scope="module")
def pyramid(tmp_path_factory):
    # detail down to ~32 px: real but not finer than the coarsest level used can hold
    level0 = smooth_texture(1536, 2048, seed=3, cells=(96, 32))
    path = write_pyramid(tmp_path_factory.mktemp("pyr") / "pyramid.tiff", level0, mpp=0.25, levels=4)
    return path, level0


@pytest.mark.parametrize("reader", ["openslide", "tiffslide"])
def test_pyramid_levels_and_tags(pyramid, reader):
    path, _ = pyramid
    with open_slide(path, reader=reader) as slide:
        assert slide.reader == reader
        assert slide.level_dimensions[:3] == ((2048, 1536), (1024, 768), (512, 384))
        assert slide.mpp == pytest.approx(0.25) and "TIFF resolution tags" in slide.mpp_source


@pytest.mark.parametrize("reader", ["openslide", "tiffslide"])
@pytest.mark.parametrize("mpp", [0.5, 0.73, 1.0, 1.6, 2.0])
@pytest.mark.parametrize("x, y", [(304, 256), (301, 257)])
def test_region_from_pyramid_matches_level0_resized(pyramid, reader, mpp, x, y):
    """Tolerance: mean |difference| < 1.5 grey levels, 99th percentile <= 6 (8-bit RGB).

    Off-grid reads from a coarse level are a little softer than level 0 resized;
    that is the tolerance, not a shift (the geometry test checks position).
    """
    path, level0 = pyramid
    size = 150
    with open_slide(path, reader=reader) as slide:
        assert slide.best_level(mpp) == max(i for i, ds in enumerate(slide.level_downsamples) if ds <= mpp / 0.25)
        region = slide.read_region(x, y, size, size, mpp)
    factor = mpp / 0.25
    span = int(round(size * factor))
    expected = cv2.resize(level0[int(y) : int(y) + span, int(x) : int(x) + span], (size, size), interpolation=cv2.INTER_AREA)
    diff = np.abs(region.astype(int) - expected.astype(int))
    assert diff.mean() < 1.5, diff.mean()
    assert np.percentile(diff, 99) <= 6


@pytest.mark.parametrize("mpp, x, y", [(0.25, 0, 0), (0.5, 10.5, 3.25), (0.73, 100.0, 80.0), (1.0, 0.7, 0.2), (2.0, 31.0, 17.0)])
def test_geometry_is_exact(tmp_path, mpp, x, y):
    """A dark spot lands where the coordinate maths says, to a tenth of an output pixel."""
    cx, cy = 700.3, 511.8  # spot centre, level-0 pixel index coordinates
    yy, xx = np.mgrid[0:1024, 0:1536]
    spot = 200 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 12.0**2))
    level0 = np.repeat((255 - spot)[:, :, None], 3, axis=2).astype(np.uint8)
    path = write_pyramid(tmp_path / "spot.tiff", level0, mpp=0.25, levels=4)
    factor = mpp / 0.25
    size = int(1400 / factor)
    with open_slide(path) as slide:
        region = slide.read_region(x, y, size, size, mpp)
    dark = 255.0 - region[:, :, 0].astype(float)
    dark[dark < 5] = 0
    ys, xs = np.mgrid[0 : dark.shape[0], 0 : dark.shape[1]]
    got = ((dark * xs).sum() / dark.sum(), (dark * ys).sum() / dark.sum())
    want = ((cx + 0.5 - x) / factor - 0.5, (cy + 0.5 - y) / factor - 0.5)
    assert got == pytest.approx(want, abs=0.1)


def test_outside_the_slide_is_white(pyramid):
    path, level0 = pyramid
    with open_slide(path, reader="tiffslide") as slide:
        region = slide.read_region(-64, -64, 128, 128, 0.25)
    assert (region[:64] == 255).all() and (region[:, :64] == 255).all()
    assert np.array_equal(region[64:, 64:], level0[:64, :64])


def test_read_whole_is_seamless_across_blocks(pyramid):
    """The thumbnail is read in blocks; it must equal one read of the same grid."""
    path, _ = pyramid
    with open_slide(path) as slide:
        whole = slide.read_whole(1.0)
        assert whole.shape == (384, 512, 3)
        assert np.array_equal(whole, slide.read_region(0, 0, 512, 384, 1.0))


def test_untiled_tiff_with_resolution_tags(tmp_path):
    path = tmp_path / "field.tif"
    image = smooth_texture(300, 400)
    tifffile.imwrite(path, image, photometric="rgb", resolution=(1e4 / 0.2456, 1e4 / 0.2456), resolutionunit="CENTIMETER")
    with open_slide(path) as slide:
        assert slide.reader == "tiffslide"
        assert slide.mpp == pytest.approx(0.2456)
        assert np.array_equal(slide.read_region(0, 0, 400, 300, 0.2456), image)


def test_unknown_reader_and_bad_mpp(pyramid):
    path, _ = pyramid
    with pytest.raises(SlideError, match="unknown reader"):
        open_slide(path, reader="bioformats")
    with pytest.raises(SlideError, match="positive"):
        open_slide(path, mpp=-1)
