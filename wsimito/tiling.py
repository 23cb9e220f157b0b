"""The grid of tiles the models see: fixed size at the model's mpp, with a halo.

Cores (the tile minus its halo) tile the frame exactly, so every level-0 point
belongs to one tile's core; the halo gives the network context at the border
and lets the stitcher keep only detections whose centre falls in the core.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from wsimito.config import TilingConfig


@dataclass(frozen=True)
class Tile:
    row: int
    col: int
    x: float  # level-0 frame x of the tile's top-left pixel (halo included)
    y: float
    size: int  # pixels per side at ``mpp``, halo included
    halo: int  # pixels at ``mpp`` on each side
    mpp: float
    scale_x: float  # level-0 pixels per tile pixel
    scale_y: float

    @property
    def box(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) level-0 box the tile reads, halo included."""
        return (self.x, self.y, self.x + self.size * self.scale_x, self.y + self.size * self.scale_y)

    @property
    def core(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) level-0 box this tile is responsible for."""
        hx, hy = self.halo * self.scale_x, self.halo * self.scale_y
        x0, y0, x1, y1 = self.box
        return (x0 + hx, y0 + hy, x1 - hx, y1 - hy)

    def read(self, slide):
        """The tile's RGB pixels (``size x size x 3``), white beyond the slide's edge."""
        return slide.read_region(self.x, self.y, self.size, self.size, self.mpp)

    def read_checked(self, slide):
        """The tile's pixels and which of them the reader could not produce (a ``slide.Region``)."""
        return slide.read_region_checked(self.x, self.y, self.size, self.size, self.mpp)


def tile_grid(slide, config: TilingConfig = TilingConfig(), tissue=None) -> list[Tile]:
    """All tiles of ``slide`` at ``config.mpp``, or only those whose core touches ``tissue``.

    Row-major order. A slide at a coarser mpp than the model is tiled all the
    same (it will be upsampled); callers that mind should check ``slide.mpp``.
    """
    stride = config.tile_size - 2 * config.halo
    scale_x = config.mpp / slide.resolution.mpp_x
    scale_y = config.mpp / slide.resolution.mpp_y
    width, height = slide.dimensions
    cols = max(1, math.ceil(width / scale_x / stride))
    rows = max(1, math.ceil(height / scale_y / stride))
    tiles = []
    for row in range(rows):
        for col in range(cols):
            tile = Tile(
                row=row,
                col=col,
                x=(col * stride - config.halo) * scale_x,
                y=(row * stride - config.halo) * scale_y,
                size=config.tile_size,
                halo=config.halo,
                mpp=config.mpp,
                scale_x=scale_x,
                scale_y=scale_y,
            )
            if tissue is None or tissue.touches(*tile.core):
                tiles.append(tile)
    return tiles


def array_tiles(rgb: np.ndarray, tile: int, halo: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """An in-memory image cut as ``tile_grid`` cuts a slide: the image padded with white by ``halo`` (and to
    whole cores), and the (top, left) corner of each tile in it, row-major. Tile ``padded[top : top + tile,
    left : left + tile]`` has its core at image pixels ``[top, top + tile - 2 * halo)`` (same for x)."""
    height, width = rgb.shape[:2]
    stride = tile - 2 * halo
    rows, cols = -(-height // stride), -(-width // stride)
    padded = np.full((rows * stride + 2 * halo, cols * stride + 2 * halo, 3), 255, np.uint8)
    padded[halo : halo + height, halo : halo + width] = rgb
    return padded, [(r * stride, c * stride) for r in range(rows) for c in range(cols)]
