"""What lies on a synthetic slide's glass: tissue pieces, a marker-pen stroke, a scanner border, and the scene.

A slide is a field's scene limited to a few tissue pieces with noisy outlines (with a coarse map of where they
are, so tiles of bare glass skip the tissue work), optionally with ink over one piece's edge and a black strip,
and with the mitosis rate set so that the tissue has the requested density.
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

from wsimito.synth.noise import fbm, hash64, subkey
from wsimito.synth.scene import CELL_SPACING, NEST_LEVEL, OBJECT_REACH, Scene


class _Pieces:
    """Tissue pieces on the glass: ellipses with noisy outlines, in µm, and a coarse map of where they are."""

    def __init__(self, centres, radii, angles, key: int, bounds):
        self.centres = np.asarray(centres, np.float64)
        self.radii = np.asarray(radii, np.float64)
        self.angles = np.asarray(angles, np.float64)
        self.key = key
        self.bounds = bounds  # (x0, y0, x1, y1) µm where tissue may lie
        mean_r = float(np.sqrt(self.radii.prod(1)).mean())
        self.scale = 0.5 * mean_r
        self.soft = 1.5 / mean_r  # level change over the 1.5 µm soft edge
        # Bound on the level's slope per µm: the ellipses' plus the outline noise's (4 octaves, see level).
        self.slope = 1 / float(self.radii.min()) + 5 / mean_r
        # µm between samples of the occupancy map: fine enough for small pieces, at most 2048 samples a side.
        self.grid = max(float(np.clip(mean_r / 32, 2.0, 16.0)), max(bounds[2:]) / 2048)

    @functools.cached_property
    def occupied(self) -> np.ndarray:
        """Coarse map (grid µm cells) of where tissue or an object drawn from it may be, for skipping glass."""
        x0, y0, x1, y1 = self.bounds
        gx, gy = np.arange(0, x1 + self.grid, self.grid), np.arange(0, y1 + self.grid, self.grid)
        near = grid_map(lambda x, y: self.level(x, y) > -self.slope * self.grid, gx, gy).astype(np.uint8)
        grow = int(math.ceil((OBJECT_REACH + 4) / self.grid)) + 1  # object reach and blur
        return cv2.dilate(near, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)) > 0

    def level(self, x, y) -> np.ndarray:
        """Signed tissue level at µm positions: above 0 is tissue."""
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        best = None
        for (cx, cy), (rx, ry), angle in zip(self.centres, self.radii, self.angles):
            c, s = math.cos(angle), math.sin(angle)
            u = ((x - cx) * c + (y - cy) * s) / rx
            v = (-(x - cx) * s + (y - cy) * c) / ry
            one = 1 - np.sqrt(u * u + v * v)
            best = one if best is None else np.maximum(best, one)
        level = best + 0.7 * (fbm(x, y, self.key, self.scale, 4) - 0.5)
        x0, y0, x1, y1 = self.bounds
        inside = (x >= x0) & (x < x1) & (y >= y0) & (y < y1)
        return np.where(inside, level, -1.0).astype(np.float32)

    def alpha_of_level(self, level):
        """Opacity from the tissue level: a soft edge about 1.5 µm wide."""
        return np.clip(level / np.float32(self.soft) + 0.5, 0, 1)

    def alpha(self, x, y) -> np.ndarray:
        """Opacity of the tissue at µm positions."""
        return self.alpha_of_level(self.level(x, y))

    def touches(self, x0, y0, x1, y1) -> bool:
        """Whether tissue, or an object drawn from tissue, may reach into a µm box."""
        g = self.grid
        r0, r1 = max(int(y0 // g), 0), int(y1 // g) + 2
        c0, c1 = max(int(x0 // g), 0), int(x1 // g) + 2
        return bool(self.occupied[r0:r1, c0:c1].any())


def grid_map(fn, xs, ys, rows: int = 128) -> np.ndarray:
    """fn(x as a row, y as a column) over a grid, a band of rows at a time so temporaries stay small."""
    return np.concatenate([fn(xs[None, :], ys[r:r + rows, None]) for r in range(0, len(ys), rows)])


def _place_pieces(rng: np.random.Generator, bounds, key: int) -> _Pieces:
    """Two to five separate tissue pieces, one per cell of a grid over the usable glass, covering 30-60% of the
    glass (redrawn until the coverage fits)."""
    x0, y0, x1, y1 = bounds
    gx = np.linspace(0, x1 + x0, 96)[None, :]  # the glass: usable bounds and the margin around them
    gy = np.linspace(0, y1 + y0, 96)[:, None]
    best, best_error = None, np.inf
    for _ in range(60):
        count = int(rng.integers(2, 6))
        cols = max(1, min(count, round(math.sqrt(count * (x1 - x0) / (y1 - y0)))))
        rows = -(-count // cols)
        cw, ch = (x1 - x0) / cols, (y1 - y0) / rows
        cells = rng.permutation(rows * cols)[:count]
        cx = x0 + (cells % cols + 0.5 + rng.uniform(-0.08, 0.08, count)) * cw
        cy = y0 + (cells // cols + 0.5 + rng.uniform(-0.08, 0.08, count)) * ch
        radii = np.stack([cw * rng.uniform(0.3, 0.45, count), ch * rng.uniform(0.3, 0.45, count)], 1)
        pieces = _Pieces(np.stack([cx, cy], 1), radii, rng.uniform(-0.3, 0.3, count), key, bounds)
        coverage = float((pieces.level(gx, gy) > 0).mean())
        error = max(0.3 - coverage, coverage - 0.6, 0)
        if error == 0:
            return pieces
        if error < best_error:
            best, best_error = pieces, error
    return best


class _Pen:
    """A marker stroke: a smooth curve in level-0 px with a width and an ink colour (optical density)."""

    def __init__(self, points, width_px: float, od, key: int, mpp: float):
        self.points = np.asarray(points, np.float64)
        self.half = width_px / 2
        self.od = np.asarray(od, np.float32)
        self.key = key
        self.mpp = mpp
        lo, hi = self.points.min(0) - self.half - 4, self.points.max(0) + self.half + 4
        self.box = (lo[0], lo[1], hi[0], hi[1])

    def optical_density(self, x0: int, y0: int, w: int, h: int):
        """Ink optical density (3, h, w) over a px box, or None where the stroke does not reach."""
        bx0, by0, bx1, by1 = self.box
        if bx1 < x0 or by1 < y0 or bx0 > x0 + w or by0 > y0 + h:
            return None
        xs = (x0 + np.arange(w, dtype=np.float64))[None, :]
        ys = (y0 + np.arange(h, dtype=np.float64))[:, None]
        dist = np.full((h, w), np.inf, np.float32)
        reach = self.half + 4
        for (ax, ay), (bx, by) in zip(self.points[:-1], self.points[1:]):
            if max(ax, bx) + reach < x0 or min(ax, bx) - reach > x0 + w or \
                    max(ay, by) + reach < y0 or min(ay, by) - reach > y0 + h:
                continue
            vx, vy = bx - ax, by - ay
            t = np.clip(((xs - ax) * vx + (ys - ay) * vy) / (vx * vx + vy * vy), 0, 1)
            d = np.sqrt(np.square(xs - ax - t * vx) + np.square(ys - ay - t * vy)).astype(np.float32)
            np.minimum(dist, d, out=dist)
        if not np.isfinite(dist).any():
            return None
        xu, yu = xs * self.mpp, ys * self.mpp
        ragged = self.half * (1 + 0.06 * (fbm(xu, yu, self.key, 60.0, 3) - 0.5))
        density = 0.8 + 0.4 * fbm(xu, yu, subkey(self.key, "ink"), 150.0, 2)
        ink = np.clip((ragged - dist) / 2.0 + 0.5, 0, 1) * density
        return self.od[:, None, None] * ink[None]


def _draw_pen(rng: np.random.Generator, pieces: _Pieces, width_um: float, height_um: float, mpp: float, key: int):
    """A blue or green stroke that starts on glass and runs over the edge of the largest piece."""
    target = pieces.centres[int(np.argmax(pieces.radii.prod(1)))]
    along, side = rng.uniform(0.1, 0.9), rng.integers(4)
    start = np.array([(along, 0.04), (0.04, along), (along, 0.96), (0.96, along)][side]) * [width_um, height_um]
    end = start + (target - start) * rng.uniform(0.8, 1.1)
    normal = np.array([-(end - start)[1], (end - start)[0]])
    control = (start + end) / 2 + normal * rng.uniform(-0.3, 0.3)
    t = np.linspace(0, 1, 48)[:, None]
    curve = (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t * t * end
    width = min(300.0, 0.06 * min(width_um, height_um)) * rng.uniform(0.7, 1.2)
    od = (0.95, 0.5, 0.08) if rng.uniform() < 0.5 else (0.9, 0.12, 0.62)  # blue or green ink
    return _Pen(curve / mpp, width / mpp, np.asarray(od) * rng.uniform(0.8, 1.2), key, mpp)


def slide_scene(h: int, w: int, mpp: float, seed: int, mitoses_per_mm2: float, pen: bool, border: bool):
    """The scene of a synthetic slide, with its tissue pieces, pen stroke and scanner border."""
    rng = np.random.default_rng([int(seed), 0x511DE])
    key = int(hash64(0x11A0, int(seed)))
    width_um, height_um = w * mpp, h * mpp
    border_x = max(64, round(0.02 * w)) if border else 0
    margin = 0.05 * min(width_um, height_um)
    bounds = (margin, margin, width_um - border_x * mpp - margin, height_um - margin)
    pieces = _place_pieces(rng, bounds, subkey(key, "pieces"))
    stroke = _draw_pen(rng, pieces, width_um - border_x * mpp, height_um, mpp, subkey(key, "pen")) if pen else None
    scene = Scene(seed, mpp, tissue=pieces, pen=stroke, border_x=(w - border_x) if border else None)
    # Mitosis rate per eligible tumour site so that the slide has about mitoses_per_mm2 per mm² of tissue.
    g = max(8.0, max(width_um, height_um) / 1024)
    gx, gy = np.arange(g / 2, width_um, g), np.arange(g / 2, height_um, g)
    tissue = grid_map(lambda x, y: pieces.level(x, y) > 0, gx, gy)
    tumour = tissue & grid_map(lambda x, y: scene.nest(x, y) > NEST_LEVEL, gx, gy)
    eligible_per_mm2 = 1e6 / (CELL_SPACING ** 2 * math.sqrt(3) / 2) / 4
    if tumour.any():
        scene.mitosis_rate = min(1.0, mitoses_per_mm2 * tissue.sum() / tumour.sum() / eligible_per_mm2)
    return scene
