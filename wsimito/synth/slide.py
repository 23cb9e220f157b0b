"""Whole slides on disk: the pyramidal tiled TIFF and the truth beside it (mitoses, tissue mask, metadata).

Level 0 is rendered tile by tile on a few threads (a few tiles in flight; tiles that no tissue or pen reaches
skip the tissue work) and handed, in order, to tifffile's tile iterator, which JPEG-encodes and writes them.
Each finished tile is also averaged 2x2 and written as one piece of level 1 to a temporary raw file beside the
slide; raw levels are stored as square pieces of half a tile, one after another, so a piece is one write and a
tile four reads. Each lower level is then made from blocks of 2x2 pieces of the raw level above, and every lower
level is written to the TIFF from its raw file. Nothing ever holds more than a few tiles, so memory is flat in
slide size (the small maps, such as the low-resolution tissue truth, are capped at 2048 pixels a side). Temporary
disk use is about a third of level 0, uncompressed. Rendering every level procedurally at its own scale was the
alternative; it would need a second renderer that agrees with the averaged level 0, and averaging is cheap.
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tifffile

from wsimito.synth.fields import size_pair
from wsimito.synth.layout import grid_map, slide_scene
from wsimito.synth.noise import u01
from wsimito.synth.scene import Scene


def _slide_mitoses(scene: Scene, h: int, w: int) -> np.ndarray:
    """Mask centroids (x, y) in level-0 px of every mitosis of a slide scene, found site by site in bands."""
    found = []
    band = 400.0  # µm of slide height per pass, to bound memory
    y = 0.0
    while y < h * scene.mpp:
        i, j, x, yy = scene.cells.sites(0, y, w * scene.mpp, min(y + band, h * scene.mpp))
        eligible = (i % 2 == 0) & (j % 2 == 0) & (u01(scene.cells.key, i, j, 11) < scene.mitosis_rate)
        i, j, x, yy = i[eligible], j[eligible], x[eligible], yy[eligible]
        for k in np.nonzero(scene.cell_kinds(i, j, x, yy) == 2)[0]:
            found.append(scene.mitosis_sprite(i[k], j[k], x[k], yy[k]).centroid())
        y += band
    return np.array(found, np.float64).reshape(-1, 2)


@dataclass
class SynthSlideTruth:
    """What a synthetic slide contains, as written beside it."""

    path: Path
    size: tuple[int, int]  # (height, width) of level 0
    mpp: float
    seed: int
    flavour: str
    levels: list[tuple[int, int]]  # (height, width) of every level
    mitoses: np.ndarray  # (N, 2) mask centroids (x, y) in level-0 pixels
    tissue_mask: np.ndarray  # bool, level-0 size / tissue_downsample
    tissue_downsample: int
    tissue_area_mm2: float
    mitoses_csv: Path
    tissue_png: Path
    truth_json: Path


def _level_shapes(h: int, w: int) -> list[tuple[int, int]]:
    """(height, width) of each pyramid level: halved (rounding up) until the largest side is under 1024."""
    shapes = [(h, w)]
    while max(shapes[-1]) >= 1024:
        lh, lw = shapes[-1]
        shapes.append(((lh + 1) // 2, (lw + 1) // 2))
    return shapes


def _half(image: np.ndarray) -> np.ndarray:
    """2x2 mean (rounded), edge pixels repeated where a side is odd."""
    if image.shape[0] % 2 or image.shape[1] % 2:
        image = np.pad(image, ((0, image.shape[0] % 2), (0, image.shape[1] % 2), (0, 0)), mode="edge")
    a = image.astype(np.uint16)
    total = a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2]
    return ((total + 2) >> 2).astype(np.uint8)


class _RawLevel:
    """A pyramid level on disk, uncompressed RGB in square pieces of half a slide tile, stored one after the other
    (row-major): a 2x2-averaged slide tile is exactly one piece, and any block of pieces a few contiguous reads."""

    def __init__(self, path: Path, shape, piece: int):
        self.path, self.shape, self.piece = path, shape, piece
        self.rows, self.cols = -(-shape[0] // piece), -(-shape[1] // piece)
        self.piece_bytes = piece * piece * 3

    def create(self) -> None:
        with open(self.path, "wb") as fh:
            fh.truncate(self.rows * self.cols * self.piece_bytes)

    def write_piece(self, fd: int, py: int, px: int, pixels: np.ndarray) -> None:
        """Write piece (py, px) from pixels no bigger than a piece."""
        padded = np.zeros((self.piece, self.piece, 3), np.uint8)
        padded[:pixels.shape[0], :pixels.shape[1]] = pixels
        os.pwrite(fd, padded.tobytes(), (py * self.cols + px) * self.piece_bytes)

    def block(self, fh, by: int, bx: int) -> np.ndarray:
        """The 2x2 pieces at block (by, bx), i.e. pieces (2by..2by+1, 2bx..2bx+1), cropped to the level."""
        p = self.piece
        out = np.zeros((2 * p, 2 * p, 3), np.uint8)
        for dy in range(2):
            for dx in range(2):
                py, px = 2 * by + dy, 2 * bx + dx
                if py < self.rows and px < self.cols:
                    fh.seek((py * self.cols + px) * self.piece_bytes)
                    out[dy * p:(dy + 1) * p, dx * p:(dx + 1) * p] = np.frombuffer(
                        fh.read(self.piece_bytes), np.uint8).reshape(p, p, 3)
        return out[:min(2 * p, self.shape[0] - 2 * p * by), :min(2 * p, self.shape[1] - 2 * p * bx)]

    def tiles(self):
        """Every slide tile (two pieces a side), row-major, cropped to the level."""
        with open(self.path, "rb") as fh:
            for by in range(-(-self.rows // 2)):
                for bx in range(-(-self.cols // 2)):
                    yield self.block(fh, by, bx)

    def halve(self, dst: "_RawLevel") -> None:
        """Write dst, this level averaged 2x2: each of its pieces is a block of this level, halved."""
        with open(self.path, "rb") as src, open(dst.path, "wb") as out:
            for py in range(dst.rows):
                for px in range(dst.cols):
                    half = _half(self.block(src, py, px))
                    padded = np.zeros((dst.piece, dst.piece, 3), np.uint8)
                    padded[:half.shape[0], :half.shape[1]] = half
                    out.write(padded.tobytes())

    def whole(self) -> np.ndarray:
        """The whole level as one array (for small levels only)."""
        image = np.zeros(self.shape + (3,), np.uint8)
        t = 2 * self.piece
        for k, pixels in enumerate(self.tiles()):
            y, x = divmod(k, -(-self.cols // 2))
            image[y * t:y * t + pixels.shape[0], x * t:x * t + pixels.shape[1]] = pixels
        return image


def _level0_tiles(scene: Scene, shape, tile: int, level1: _RawLevel | None, workers: int):
    """Level-0 tiles in row-major order, rendered on threads (a few in flight); each is also averaged 2x2 into
    one piece of level 1 on disk."""
    h, w = shape
    corners = [(y, x) for y in range(0, h, tile) for x in range(0, w, tile)]

    def render(y, x):
        return scene.render(x, y, min(tile, w - x), min(tile, h - y))[0]

    def finish(y, x, future):
        pixels = future.result()
        if level1 is not None:
            level1.write_piece(fd, y // tile, x // tile, _half(pixels))
        return pixels

    fd = os.open(level1.path, os.O_WRONLY) if level1 is not None else None
    try:
        with ThreadPoolExecutor(workers) as pool:
            pending = deque()
            for y, x in corners:
                pending.append((y, x, pool.submit(render, y, x)))
                if len(pending) > 2 * workers:
                    yield finish(*pending.popleft())
            while pending:
                yield finish(*pending.popleft())
    finally:
        if fd is not None:
            os.close(fd)


def _magnification(mpp: float) -> int:
    """The nominal objective for a pixel size (Aperio's AppMag): 0.25 µm/px is 40x."""
    return min((5, 10, 20, 40, 60, 80), key=lambda m: abs(math.log(m * mpp / 10)))


def _tissue_truth(scene: Scene, h: int, w: int):
    """Low-resolution tissue mask (bool), its downsample (a power of two, long side at most 2048), area in mm²."""
    ds = 1
    while max(h, w) / ds > 2048:
        ds *= 2
    xs = ((np.arange(-(-w // ds)) + 0.5) * ds - 0.5) * scene.mpp
    ys = ((np.arange(-(-h // ds)) + 0.5) * ds - 0.5) * scene.mpp
    mask = grid_map(lambda x, y: scene.tissue.level(x, y) > 0, xs, ys)
    return mask, ds, float(mask.sum() * (ds * scene.mpp) ** 2 / 1e6)


def write_slide(path, size=(20000, 20000), mpp: float = 0.25, seed: int = 0, tile: int = 512,
                flavour: str = "generic", mitoses_per_mm2: float = 3.0, pen: bool = False, border: bool = False,
                quality: int = 90, workers: int | None = None) -> SynthSlideTruth:
    """Write a synthetic pyramidal slide (tiled JPEG TIFF, one IFD per level) and its truth beside it.

    size is (height, width) of level 0. flavour "generic" stores mpp in the TIFF resolution tags (OpenSlide:
    generic-tiff); "aperio" adds an Aperio ImageDescription and a thumbnail page (OpenSlide and tiffslide: aperio).
    Beside the slide: <stem>.mitoses.csv (x,y level-0 mask centroids), <stem>.tissue.png (low-resolution tissue
    mask, 0/255) and <stem>.truth.json (mpp, size, seed, tissue downsample and area, ...). The slide appears
    under its name only when complete.
    """
    path = Path(path)
    if flavour not in ("generic", "aperio"):
        raise ValueError(f"flavour must be 'generic' or 'aperio', not {flavour!r}")
    if tile <= 0 or tile % 16:
        raise ValueError(f"tile must be a positive multiple of 16, not {tile}")
    h, w = size_pair(size)
    workers = workers or min(4, os.cpu_count() or 1)
    scene = slide_scene(h, w, mpp, seed, mitoses_per_mm2, pen, border)
    shapes = _level_shapes(h, w)
    path.parent.mkdir(parents=True, exist_ok=True)
    mag = _magnification(mpp)
    head = f"Aperio Image Library v12.0.15 \r\n{w}x{h} [0,0 {w}x{h}] ({tile}x{tile})"
    options = dict(tile=(tile, tile), dtype=np.uint8, photometric="rgb", compression="jpeg",
                   compressionargs={"level": int(quality)}, metadata=None, software="wsimito", maxworkers=2,
                   buffersize=4 * tile * tile * 3, resolutionunit="CENTIMETER")
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        truth = _write_truth(Path(tmp), path, scene, h, w, seed, flavour, shapes, tile, mitoses_per_mm2, pen, border)
        partial = Path(tmp) / path.name
        raws = [_RawLevel(Path(tmp) / f"level{k}.raw", shape, tile // 2) for k, shape in enumerate(shapes)]
        with tifffile.TiffWriter(partial, bigtiff=3 * h * w > 2**31) as tif:
            description = None
            if flavour == "aperio":
                description = (f"{head} JPEG/RGB Q={quality}|MPP = {mpp:.6g}|AppMag = {mag}|Filename = {path.stem}"
                               f"|ScanScope ID = wsimito-synth")
            level1 = raws[1] if len(raws) > 1 else None
            if level1 is not None:
                level1.create()
            tif.write(_level0_tiles(scene, shapes[0], tile, level1, workers), shape=(h, w, 3),
                      description=description, resolution=(1e4 / mpp, 1e4 / mpp), **options)
            for k in range(2, len(raws)):
                raws[k - 1].halve(raws[k])
            if flavour == "aperio":
                smallest = raws[-1].whole() if len(raws) > 1 else scene.render(0, 0, w, h)[0]
                scale = min(1.0, 768 / max(smallest.shape[:2]))
                thumb = cv2.resize(smallest, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
                tif.write(thumb, photometric="rgb", compression="jpeg", compressionargs={"level": 85}, metadata=None,
                          software="wsimito", description=f"{head} -> {thumb.shape[1]}x{thumb.shape[0]} - ")
            for k in range(1, len(raws)):
                lh, lw = shapes[k]
                description = f"{head} -> {lw}x{lh} JPEG/RGB Q={quality}" if flavour == "aperio" else None
                level_mpp = mpp * 2**k
                tif.write(raws[k].tiles(), shape=(lh, lw, 3), description=description,
                          subfiletype=1 if flavour == "generic" else 0,
                          resolution=(1e4 / level_mpp, 1e4 / level_mpp), **options)
        for name in (truth.mitoses_csv, truth.tissue_png, truth.truth_json):
            os.replace(Path(tmp) / name.name, name)
        os.replace(partial, path)  # last: the slide appears only when it and its truth are complete
    return truth


def _write_truth(folder: Path, path: Path, scene: Scene, h, w, seed, flavour, shapes, tile, mitoses_per_mm2, pen,
                 border) -> SynthSlideTruth:
    """Write <stem>.mitoses.csv, <stem>.tissue.png and <stem>.truth.json into folder; the truth names their final
    places beside the slide."""
    mitoses = _slide_mitoses(scene, h, w)
    mask, ds, area = _tissue_truth(scene, h, w)
    names = [f"{path.stem}.mitoses.csv", f"{path.stem}.tissue.png", f"{path.stem}.truth.json"]
    files = [folder / name for name in names]
    with open(files[0], "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["x", "y"])
        writer.writerows((f"{x:.2f}", f"{y:.2f}") for x, y in mitoses)
    cv2.imwrite(str(files[1]), mask.astype(np.uint8) * np.uint8(255))
    meta = {"generator": "wsimito.synth.write_slide", "slide": path.name, "flavour": flavour, "size": [h, w],
            "mpp": float(scene.mpp), "seed": int(seed), "tile": tile, "levels": [list(s) for s in shapes],
            "mitoses": len(mitoses), "mitoses_per_mm2_requested": float(mitoses_per_mm2),
            "tissue_area_mm2": round(area, 4), "tissue_downsample": ds, "pen": bool(pen), "border": bool(border)}
    files[2].write_text(json.dumps(meta, indent=2) + "\n")
    return SynthSlideTruth(path, (h, w), float(scene.mpp), int(seed), flavour, [tuple(s) for s in shapes], mitoses,
                           mask, ds, area, *(path.parent / name for name in names))
