"""Tissue a slide's reader could not produce: found per tile, measured, and said, never counted as examined.

A damaged or missing tile in the file (OpenSlide paints it transparent, tiffslide black, a decoder raises on
corrupt bytes) leaves white pixels in a tile that ``slide.Region.unread`` marks. Where those pixels fall on
tissue in the tile's core, that tissue was not examined: the slide is ``partial``, its density and hotspot
cover the rest, and the tiles are listed with their level-0 boxes in counts.csv, the GeoJSON and the Zarr.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

_LISTED = 3  # tiles named in the counts.csv message before "and N more"


@dataclass(frozen=True)
class UnreadTile:
    row: int
    col: int
    box: tuple[float, float, float, float]  # level-0 (x0, y0, x1, y1) around the tissue not read in the core
    mm2: float  # tissue not examined in the core
    problem: str  # the reader's words

    def to_dict(self) -> dict:
        return {**asdict(self), "box": [round(float(v), 1) for v in self.box]}

    @classmethod
    def from_dict(cls, data: dict) -> "UnreadTile":
        return cls(int(data["row"]), int(data["col"]), tuple(data["box"]), float(data["mm2"]), data["problem"])


def unread_tissue(tile, region, tissue) -> UnreadTile | None:
    """What of ``tile``'s core is tissue that its read (``region``, a ``slide.Region``) could not produce."""
    if region.unread is None:
        return None
    halo = tile.halo
    rows, cols = np.nonzero(region.unread[halo : tile.size - halo, halo : tile.size - halo])
    x = tile.x + (cols + halo + 0.5) * tile.scale_x  # level-0 centres of the lost core pixels
    y = tile.y + (rows + halo + 0.5) * tile.scale_y
    lost = tissue.contains(x, y)
    if not lost.any():
        return None
    x, y = x[lost], y[lost]
    half_x, half_y = tile.scale_x / 2, tile.scale_y / 2
    box = (x.min() - half_x, y.min() - half_y, x.max() + half_x, y.max() + half_y)
    return UnreadTile(tile.row, tile.col, tuple(float(v) for v in box), float(lost.sum()) * (tile.mpp / 1000) ** 2,
                      region.problem)


def describe_unread(unread: list[UnreadTile], tiles: int) -> str:
    """The counts.csv message of a partial slide: how much, where, and why."""
    total = sum(t.mm2 for t in unread)
    where = "; ".join(f"tile row {t.row} col {t.col}, level-0 box ({t.box[0]:.0f}, {t.box[1]:.0f})-"
                      f"({t.box[2]:.0f}, {t.box[3]:.0f}): {t.problem}" for t in unread[:_LISTED])
    more = f"; and {len(unread) - _LISTED} more (all in the Zarr attributes)" if len(unread) > _LISTED else ""
    return (f"{len(unread)} of {tiles} tissue tiles could not be read in full: {total:.4f} mm² of tissue not "
            f"examined, left out of the density and hotspot: {where}{more}")
