"""Sprites: the objects drawn into a region's concentration canvas, and the drawing.

Nuclei are drawn in vectorised batches of soft ellipses with wavy outlines and granular chromatin. Mitoses
(metaphase bars, end-on metaphase clumps, anaphase/telophase pairs of bars, prometaphase clumps) are unions of
small chromatin blobs with ragged edges, far darker than normal nuclei; the mitosis mask is exactly the drawn
chromatin (alpha >= 0.5). Hard negatives (lymphocytes, pyknotic and apoptotic nuclei) are as dark but round and
smooth, so darkness alone does not find mitoses. Everything here is in level-0 pixels; the scene decides where
objects go.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class Canvas:
    """Hematoxylin and eosin concentrations (and the mitosis mask) of a region, origin in level-0 pixels."""

    x0: int
    y0: int
    hema: np.ndarray
    eosin: np.ndarray
    mask: np.ndarray

    def window(self, px: int, py: int, size_y: int, size_x: int):
        """Canvas and patch slices where a patch with top-left (px, py) overlaps the canvas, or None."""
        h, w = self.hema.shape
        ax0, ay0 = px - self.x0, py - self.y0
        cx0, cy0 = max(ax0, 0), max(ay0, 0)
        cx1, cy1 = min(ax0 + size_x, w), min(ay0 + size_y, h)
        if cx0 >= cx1 or cy0 >= cy1:
            return None
        return (slice(cy0, cy1), slice(cx0, cx1)), (slice(cy0 - ay0, cy1 - ay0), slice(cx0 - ax0, cx1 - ax0))


def _patch_grid(cx, cy, radius_px: float):
    """Pixel offsets from sub-pixel centres for a batch of square patches: (origin_x, origin_y, dx, dy).

    Offsets are computed from absolute pixel positions, so a pixel's offset does not depend on the patch size."""
    half = int(math.ceil(radius_px)) + 2
    ox = np.floor(cx).astype(np.int64) - half
    oy = np.floor(cy).astype(np.int64) - half
    ramp = np.arange(2 * half + 1)
    dx = ((ox[:, None] + ramp) - np.asarray(cx, np.float64)[:, None]).astype(np.float32)[:, None, :]
    dy = ((oy[:, None] + ramp) - np.asarray(cy, np.float64)[:, None]).astype(np.float32)[:, :, None]
    return ox, oy, dx, dy


def _ellipse_alpha(dx, dy, a, b, angle, harmonics, soft_px):
    """Soft alpha of ellipses with wavy outlines, and the depth inside the outline in pixels.

    harmonics: (N, K, 2) amplitude and phase of outline waves 2..K+1 (0 amplitude = a smooth ellipse).
    """
    a, b, angle = (np.asarray(t, np.float32)[:, None, None] for t in (a, b, angle))
    harmonics = np.asarray(harmonics, np.float32)
    ca, sa = np.cos(angle), np.sin(angle)
    u = (dx * ca + dy * sa) / a
    v = (-dx * sa + dy * ca) / b
    r = np.sqrt(u * u + v * v)
    theta = np.arctan2(v, u)
    edge = np.ones_like(r)
    for k in range(harmonics.shape[1]):
        amp, phase = harmonics[:, k, 0, None, None], harmonics[:, k, 1, None, None]
        edge += amp * np.cos((k + 2) * theta + phase)
    depth = (edge - r) * np.sqrt(a * b)
    return np.clip(depth / np.float32(soft_px) + 0.5, 0.0, 1.0), depth


@dataclass
class Nuclei:
    """A batch of ordinary nuclei: centres and sizes in level-0 pixels, stain in concentration units."""

    cx: np.ndarray
    cy: np.ndarray
    a: np.ndarray
    b: np.ndarray
    angle: np.ndarray
    harmonics: np.ndarray  # (N, K, 2)
    density: np.ndarray  # hematoxylin of the chromatin
    texture: np.ndarray  # granularity amplitude (relative)
    rim: np.ndarray  # extra hematoxylin on the nuclear membrane
    nucleolus: np.ndarray  # nucleolus radius in px, 0 = none
    eosin_keep: np.ndarray  # fraction of the eosin under the nucleus that remains
    seeds: np.ndarray  # uint64 hash per nucleus for texture offsets


def draw_nuclei(canvas: Canvas, nuclei: Nuclei, bank: np.ndarray, mpp: float) -> None:
    """Composite a batch of nuclei over the canvas, in order: vectorised shapes, one paste per nucleus."""
    n = len(nuclei.cx)
    if n == 0:
        return
    reach = float(np.max(nuclei.a * (1 + np.abs(nuclei.harmonics[:, :, 0]).sum(1)))) + 1
    ox, oy, dx, dy = _patch_grid(nuclei.cx, nuclei.cy, reach)
    alpha, depth = _ellipse_alpha(dx, dy, nuclei.a, nuclei.b, nuclei.angle, nuclei.harmonics, 0.9)
    size = dx.shape[2]
    b_size = bank.shape[0]
    # Each nucleus reads the granule texture at its own offset, by absolute pixel (not patch) position.
    tx = (nuclei.seeds % np.uint64(b_size)).astype(np.int64) + ox
    ty = ((nuclei.seeds >> np.uint64(20)) % np.uint64(b_size)).astype(np.int64) + oy
    ramp = np.arange(size)
    tex = bank[(ty[:, None, None] + ramp[None, :, None]) % b_size, (tx[:, None, None] + ramp[None, None, :]) % b_size]
    rim_width = 0.45 / mpp
    rim = np.exp(-np.square(depth / rim_width))
    # Vesicular chromatin: paler in the middle, granular everywhere.
    inner = np.clip(depth / (0.5 * np.sqrt(nuclei.a * nuclei.b))[:, None, None], 0, 1)
    hema = nuclei.density[:, None, None] * (1 - 0.25 * inner) * (1 + nuclei.texture[:, None, None] * tex)
    hema += nuclei.rim[:, None, None] * rim
    has_nucleolus = nuclei.nucleolus > 0
    if has_nucleolus.any():
        angle = (nuclei.seeds >> np.uint64(40)).astype(np.float64) * (2 * np.pi / (1 << 24))
        off = 0.35 * nuclei.b
        nx, ny = off * np.cos(angle), off * np.sin(angle)
        d2 = np.square(dx - nx[:, None, None]) + np.square(dy - ny[:, None, None])
        radius = np.maximum(nuclei.nucleolus, 1e-3)[:, None, None]
        hema += 1.1 * has_nucleolus[:, None, None] * np.clip(1.5 - np.sqrt(d2) / radius, 0, 1)
    hema = np.maximum(hema, 0).astype(np.float32)
    keep = nuclei.eosin_keep.astype(np.float32)
    for i in range(n):
        win = canvas.window(int(ox[i]), int(oy[i]), size, size)
        if win is None:
            continue
        cs, ps = win
        a = alpha[i][ps]
        canvas.hema[cs] += a * (hema[i][ps] - canvas.hema[cs])
        canvas.eosin[cs] *= 1 - a * (1 - keep[i])


def _blob_field(dx, dy, centres, sigmas, weights):
    """Sum of Gaussian blobs (centres and sigmas in px) on a patch: chromatin density."""
    field = np.zeros(dx.shape, np.float32)
    for (bx, by), s, w in zip(centres, sigmas, weights):
        field += w * np.exp(-(np.square(dx - bx) + np.square(dy - by)) / (2 * s * s))
    return field


_MITOSIS_KINDS = ("metaphase", "end-on metaphase", "anaphase", "telophase", "prometaphase")
_MITOSIS_WEIGHTS = (0.32, 0.13, 0.14, 0.1, 0.31)


@dataclass
class Sprite:
    """One drawn object: a patch with top-left (ox, oy) in level-0 px."""

    ox: int
    oy: int
    chromatin: np.ndarray  # alpha of the dark chromatin
    hema: np.ndarray  # hematoxylin where chromatin alpha is 1
    halo: np.ndarray  # alpha of the surrounding cell body
    halo_hema: float
    halo_eosin: float
    is_mitosis: bool

    def centroid(self) -> tuple[float, float]:
        """(x, y) of the mask (chromatin alpha >= 0.5) in level-0 pixel coordinates."""
        rows, cols = np.nonzero(self.chromatin >= 0.5)
        return self.ox + float(cols.mean()), self.oy + float(rows.mean())

    def draw(self, canvas: Canvas) -> None:
        """Composite the cell body, then the chromatin, over the canvas; mitoses also mark the mask."""
        size_y, size_x = self.chromatin.shape
        win = canvas.window(self.ox, self.oy, size_y, size_x)
        if win is None:
            return
        cs, ps = win
        halo = self.halo[ps]
        canvas.hema[cs] += halo * (self.halo_hema - canvas.hema[cs])
        canvas.eosin[cs] += halo * (self.halo_eosin - canvas.eosin[cs])
        a = self.chromatin[ps]
        canvas.hema[cs] += a * (self.hema[ps] - canvas.hema[cs])
        canvas.eosin[cs] *= 1 - 0.7 * a
        if self.is_mitosis:
            canvas.mask[cs] |= a >= 0.5


def _line_points(rng, count, length, width, bow=0.0):
    """Points spread along a (possibly bowed) bar centred on 0, long axis x, in µm."""
    t = rng.uniform(-0.5, 0.5, count)
    x = t * length
    y = rng.normal(0, width / 2.5, count) + bow * (1 - 4 * t * t)
    return np.stack([x, y], 1)


def mitotic_figure(cx: float, cy: float, seed: int, mpp: float, bank: np.ndarray) -> Sprite:
    """A mitotic figure centred near (cx, cy) px: clumped chromatin with ragged edges in a pale rounded cell."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(len(_MITOSIS_KINDS), p=_MITOSIS_WEIGHTS)
    name = _MITOSIS_KINDS[kind]
    if name == "metaphase":
        pts = _line_points(rng, rng.integers(28, 45), rng.uniform(6.5, 11), rng.uniform(0.8, 1.8))
        arms = _line_points(rng, rng.integers(3, 8), rng.uniform(5, 9), 3.5)
        pts = np.vstack([pts, arms * [1, 0.9]])
    elif name == "end-on metaphase":
        r = 2.2 * np.sqrt(rng.uniform(0, 1, rng.integers(25, 40))) * rng.uniform(0.9, 1.5)
        t = rng.uniform(0, 2 * np.pi, len(r))
        pts = np.stack([r * np.cos(t), r * np.sin(t) * rng.uniform(0.75, 1.0)], 1)
    elif name in ("anaphase", "telophase"):
        gap = rng.uniform(3.2, 5.5) if name == "anaphase" else rng.uniform(6.0, 9.0)
        length = rng.uniform(5.5, 9.5)
        bow = rng.uniform(0.3, 1.2) if name == "telophase" else rng.uniform(-0.3, 0.5)
        one = _line_points(rng, rng.integers(16, 28), length, rng.uniform(0.8, 1.6), bow)
        two = _line_points(rng, rng.integers(16, 28), length * rng.uniform(0.85, 1.1), rng.uniform(0.8, 1.6), bow)
        pts = np.vstack([one + [0, gap / 2], two * [1, -1] - [0, gap / 2]])
    else:  # prometaphase: loose clump of condensed threads
        centres = rng.normal(0, 1.8, (rng.integers(4, 8), 2))
        pts = np.vstack([c + rng.normal(0, 0.9, (rng.integers(4, 9), 2)) for c in centres])
    angle = rng.uniform(0, np.pi)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    pts = pts @ rot.T
    pts = pts - pts.mean(0)
    sigmas = rng.uniform(0.45, 0.85, len(pts)) / mpp
    weights = rng.uniform(0.7, 1.2, len(pts))
    cell_r = rng.uniform(5.0, 6.5)
    reach_um = max(float(np.abs(pts).max()) + 2.5, cell_r + 1.0)
    pts_px = pts / mpp
    cxs, cys = np.array([cx]), np.array([cy])
    ox, oy, dx, dy = _patch_grid(cxs, cys, reach_um / mpp)
    dx, dy = np.broadcast_arrays(dx[0], dy[0])
    density = _blob_field(dx, dy, pts_px, sigmas, weights)
    size = dx.shape[0]
    b_size = bank.shape[0]
    offx, offy = rng.integers(0, b_size, 2)
    tex = bank[np.ix_((offy + np.arange(size)) % b_size, (offx + np.arange(size)) % b_size)]
    ragged = density * (1 + 0.4 * tex)
    chromatin = np.clip((ragged - 0.55) / 0.18 + 0.5, 0, 1).astype(np.float32)
    hema = (rng.uniform(2.3, 3.2) * (0.9 + 0.1 * tex)).astype(np.float32)
    radii = np.array([cell_r, cell_r * rng.uniform(0.8, 1)]) / mpp
    halo, _ = _ellipse_alpha(dx[None], dy[None], radii[:1], radii[1:], np.array([angle]), np.zeros((1, 1, 2)),
                             1.5 / mpp)
    return Sprite(int(ox[0]), int(oy[0]), chromatin, hema, halo[0] * rng.uniform(0.3, 1.0), 0.06,
                   rng.uniform(0.2, 0.5), True)


def dead_cell(cx: float, cy: float, seed: int, mpp: float) -> Sprite:
    """Pyknotic (one) or apoptotic (2-4 fragments) nucleus: round, smooth, very dark, in pink shrunken cytoplasm."""
    rng = np.random.default_rng(seed)
    if rng.uniform() < 0.55:
        balls = np.zeros((1, 2))
        radii = np.array([rng.uniform(2.2, 3.4)])
    else:
        count = rng.integers(2, 5)
        balls = rng.normal(0, 1.8, (count, 2))
        radii = rng.uniform(0.9, 1.8, count)
    reach_um = float(np.abs(balls).max() + radii.max()) + 4.0
    ox, oy, dx, dy = _patch_grid(np.array([cx]), np.array([cy]), reach_um / mpp)
    dx, dy = np.broadcast_arrays(dx[0], dy[0])
    chromatin = np.zeros(dx.shape, np.float32)
    for (bx, by), r in zip(balls / mpp, radii / mpp):
        d = np.sqrt(np.square(dx - bx) + np.square(dy - by))
        chromatin = np.maximum(chromatin, np.clip(r - d + 0.5, 0, 1))
    halo_r = (float(np.abs(balls).max() + radii.max()) + rng.uniform(1.0, 2.5)) / mpp
    halo = np.clip(halo_r - np.sqrt(dx * dx + dy * dy) + 0.5, 0, 1).astype(np.float32)
    hema = np.full(dx.shape, rng.uniform(2.2, 3.0), np.float32)
    return Sprite(int(ox[0]), int(oy[0]), chromatin, hema, halo, 0.05, rng.uniform(0.75, 1.0), False)
