"""The tile grid: cores partition the frame, halos overlap exactly, only tissue tiles kept."""

import numpy as np
import pytest
from conftest import write_pyramid

from wsimito.config import TilingConfig
from wsimito.slide import open_slide
from wsimito.tiling import tile_grid
from wsimito.tissue import detect_tissue


def test_cores_partition_the_frame(data):
    with open_slide(data / "cmu1-small-region-svs/CMU-1-Small-Region.svs") as slide:
        config = TilingConfig(mpp=0.25, tile_size=256, halo=16)
        tiles = tile_grid(slide, config)
        width, height = slide.dimensions
    rows = max(t.row for t in tiles) + 1
    cols = max(t.col for t in tiles) + 1
    assert len(tiles) == rows * cols
    grid = {(t.row, t.col): t for t in tiles}
    assert grid[0, 0].core[:2] == pytest.approx((0, 0))
    for (r, c), tile in grid.items():
        if c + 1 < cols:
            assert tile.core[2] == pytest.approx(grid[r, c + 1].core[0])
        if r + 1 < rows:
            assert tile.core[3] == pytest.approx(grid[r + 1, c].core[1])
        x0, y0, x1, y1 = tile.box
        assert x1 - x0 == pytest.approx(256 * 0.25 / 0.499)
    last = grid[rows - 1, cols - 1].core
    assert last[2] >= width and last[3] >= height
    assert grid[rows - 1, cols - 1].core[0] < width and grid[rows - 1, cols - 1].core[1] < height


def test_neighbouring_tiles_agree_in_their_overlap(data):
    """Tiles sample one global grid: the halo of one is the same pixels as the core edge of the next."""
    with open_slide(data / "cmu1-small-region-svs/CMU-1-Small-Region.svs") as slide:
        config = TilingConfig(mpp=0.25, tile_size=256, halo=16)
        grid = {(t.row, t.col): t for t in tile_grid(slide, config)}
        left, right = grid[3, 2].read(slide), grid[3, 3].read(slide)
        top, bottom = grid[3, 2].read(slide), grid[4, 2].read(slide)
    stride = 256 - 2 * 16
    assert np.abs(left[:, stride:].astype(int) - right[:, : 256 - stride].astype(int)).max() <= 1
    assert np.abs(top[stride:].astype(int) - bottom[: 256 - stride].astype(int)).max() <= 1


def test_only_tissue_tiles(tmp_path):
    level0 = np.full((2048, 2048, 3), 242, np.uint8)
    level0[:, :700] = (215, 140, 185)  # tissue on the left only
    path = write_pyramid(tmp_path / "half.tiff", level0, mpp=0.25, levels=3)
    with open_slide(path) as slide:
        tissue = detect_tissue(slide)
        config = TilingConfig(mpp=0.5, tile_size=128, halo=8)
        tiles = tile_grid(slide, config, tissue)
        everything = tile_grid(slide, config)
    assert 0 < len(tiles) < len(everything)
    assert all(t.core[0] < 720 for t in tiles)
    assert all(any(t.core[0] <= x < t.core[2] for t in tiles if t.row == 0) for x in (0, 350, 690))
    assert tissue.area_mm2 == pytest.approx(700 * 2048 * 0.25**2 / 1e6, rel=0.05)


def test_bad_tiling_config():
    from wsimito.errors import WsimitoError

    with pytest.raises(WsimitoError, match="halo"):
        TilingConfig(tile_size=64, halo=32)
