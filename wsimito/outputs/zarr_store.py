"""A slide's Zarr v3 store: probability pyramid, detection table, provenance attributes.

Layout::

    <slide>.zarr/
      probability/0, 1, ...   uint8 mitosis probability x 255 at the model mpp, then 2x, 4x, ... coarser;
                              an OME-NGFF 0.5 image (``multiscales``: axes y, x in micrometres, each level's
                              pixel size, placed on the slide's level-0 frame), so napari, vizarr and QuPath's
                              OME-Zarr reader open it as a pyramid at its true size
      detections              float64 (N, 7): x, y, score, x0, y0, x1, y1 in level-0 pixels (schema.DETECTION_COLUMNS)

Level 0 is chunked by the tile stride so each tile's core is exactly one chunk:
tiles write concurrently without sharing a chunk. The store is built under
``<slide>.zarr.partial`` (a fixed name: the next run, holding the slide's lock,
clears what a killed one left there) and renamed when complete, an old store
deleted only once the new one is in its place; ``attrs["complete"]`` is set
last, so a killed run never leaves a store that looks finished.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import zarr

from wsimito.outputs.atomic import atomic_path, replace_directory
from wsimito.schema import DETECTION_COLUMNS

_MIN_LEVEL_SIDE = 256


class SlideStore:
    def __init__(self, path, shape: tuple[int, int], chunk: int, mpp: float):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        shutil.rmtree(self.partial, ignore_errors=True)
        self.root = zarr.open_group(str(self.partial), mode="w", zarr_format=3)
        self.chunk = chunk
        self.mpp = mpp  # µm per level-0 pixel of the map (the model's mpp)
        self.level0 = self.root.create_array("probability/0", shape=shape, dtype="uint8", chunks=(chunk, chunk),
                                             fill_value=0, dimension_names=("y", "x"))

    def write_core(self, row: int, col: int, probability: np.ndarray) -> None:
        """The probability (0-1 floats) of one tile core at chunk (row, col)."""
        y, x = row * self.chunk, col * self.chunk
        height = min(self.chunk, self.level0.shape[0] - y)
        width = min(self.chunk, self.level0.shape[1] - x)
        self.level0[y : y + height, x : x + width] = np.rint(probability[:height, :width] * 255).astype(np.uint8)

    def finish(self, table: np.ndarray, attributes: dict) -> Path:
        """Add the pyramid and the detections, mark complete, and move into place."""
        self._build_pyramid()
        table = np.asarray(table, np.float64).reshape(-1, len(DETECTION_COLUMNS))
        detections = self.root.create_array("detections", shape=table.shape, dtype="float64",
                                            chunks=(max(1, min(len(table), 65536)), len(DETECTION_COLUMNS)),
                                            dimension_names=("detection", "column"))
        if len(table):
            detections[:] = table
        detections.attrs["columns"] = list(DETECTION_COLUMNS)
        self.root.attrs.update(attributes)
        self.root.attrs["complete"] = True
        return replace_directory(self.partial, self.path)

    def _build_pyramid(self) -> None:
        """Each level the 2x2 mean of the one above, block by block (memory independent of slide size).

        A block with no probability at all (glass) is skipped: its mean is the fill value, and zarr stores no
        chunk of fill values anyway.
        """
        above, level = self.level0, 0
        while max(above.shape) > _MIN_LEVEL_SIDE:
            level += 1
            shape = (-(-above.shape[0] // 2), -(-above.shape[1] // 2))
            below = self.root.create_array(f"probability/{level}", shape=shape, dtype="uint8",
                                           chunks=(min(self.chunk, shape[0]), min(self.chunk, shape[1])),
                                           fill_value=0, dimension_names=("y", "x"))
            block = 2 * self.chunk
            for y in range(0, above.shape[0], block):
                for x in range(0, above.shape[1], block):
                    part = above[y : y + block, x : x + block]
                    if part.any():
                        mean = mean_2x2(part)
                        below[y // 2 : y // 2 + mean.shape[0], x // 2 : x // 2 + mean.shape[1]] = mean
            above = below
        self.root.attrs["pyramid_levels"] = level + 1
        self.root["probability"].attrs["ome"] = ome_multiscales(level + 1, self.mpp)


def ome_multiscales(levels: int, mpp: float) -> dict:
    """OME-NGFF 0.5 metadata of a pyramid of ``levels`` 2x means at ``mpp`` µm/px.

    Level 0 pixel (0, 0) covers the slide's first ``mpp`` square, so its centre is at mpp/2 µm; a level-k
    pixel averages 2^k of those, so its centre sits at 2^k * mpp / 2 µm: the translation says so and every
    level lies exactly on the others and on the slide.
    """
    axes = [{"name": name, "type": "space", "unit": "micrometer"} for name in ("y", "x")]
    datasets = []
    for level in range(levels):
        size = mpp * 2**level
        datasets.append({"path": str(level), "coordinateTransformations": [
            {"type": "scale", "scale": [size, size]},
            {"type": "translation", "translation": [size / 2, size / 2]}]})
    return {"version": "0.5", "multiscales": [{"name": "mitosis probability", "axes": axes, "datasets": datasets}]}


def mean_2x2(part: np.ndarray) -> np.ndarray:
    """uint8 2x2 means of uint8 ``part`` (an odd last row or column repeated), rounded half to even as ``np.rint``.

    In integers on strided views: a float ``reshape(...).mean(axis=(1, 3))`` took half of a slide's pyramid time.
    """
    part = np.pad(part, ((0, part.shape[0] % 2), (0, part.shape[1] % 2)), mode="edge").astype(np.uint16)
    total = part[0::2, 0::2] + part[1::2, 0::2] + part[0::2, 1::2] + part[1::2, 1::2]
    return ((total + 1 + ((total >> 2) & 1)) >> 2).astype(np.uint8)  # total / 4, a .5 to the even neighbour


def is_complete(path) -> bool:
    """Whether a finished store is at ``path`` (a killed run leaves only ``.partial``)."""
    try:
        return bool(zarr.open_group(str(path), mode="r").attrs.get("complete"))
    except Exception:
        return False


def update_attributes(path, changes: dict) -> None:
    """Change some attributes of a finished store in one rename of its ``zarr.json`` (wsimito.outputs.atomic):
    a run killed meanwhile leaves the old attributes or the new, never a truncated file that makes a finished
    store look unfinished (zarr 3.0, which setup.cfg allows, rewrites it in place; none syncs it to disk)."""
    meta_path = Path(path) / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"] = {**meta.get("attributes", {}), **changes}
    with atomic_path(meta_path) as tmp:
        tmp.write_text(json.dumps(meta, indent=2))


def read_detections(path) -> np.ndarray:
    table = zarr.open_group(str(path), mode="r")["detections"][:]
    return np.asarray(table, np.float64).reshape(-1, len(DETECTION_COLUMNS))
