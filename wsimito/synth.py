"""Synthetic H&E images and whole-slide TIFFs whose mitoses are known to the pixel.

Tests, demos, benchmarks and phase-1 training need images with exact ground truth, at any size, reproducibly.

How a picture is made
---------------------
A *scene* is a pure function of the seed and the position in micrometres, so any region can be rendered on its
own and agrees with its neighbours to the pixel: that is what makes tiled slides seamless.

- Smooth fields (tissue pieces, tumour nests, collagen fibres, inflammation, stain thickness) are value noise on
  integer lattices whose values are a 64-bit hash of (seed, lattice index), sampled every ~0.75 µm at absolute
  positions and interpolated.
- Cells sit on a jittered hexagonal lattice 12.5 µm apart (the Voronoi borders between sites are the membranes
  of the tumour cells). A site's kind (tumour nucleus, mitosis, lymphocyte, pyknotic/apoptotic nucleus,
  fibroblast, nothing) and its attributes are hashes of its index and of the fields at its centre. A region draws
  every object whose footprint overlaps it, always in the same order.
- Mitoses (metaphase bars, end-on metaphase clumps, anaphase/telophase pairs of bars, prometaphase clumps) are
  unions of small chromatin blobs with ragged edges, far darker than normal nuclei. The mask is exactly the drawn
  chromatin (alpha >= 0.5). Hard negatives (lymphocytes, pyknotic and apoptotic nuclei) are as dark but round and
  smooth, so darkness alone does not find mitoses.
- Colour: hematoxylin and eosin concentrations go through Beer-Lambert optical density with stain vectors perturbed
  per image, then a mild optical blur and sensor noise. Pixel noise comes from a random texture indexed by absolute
  position, so it too is the same whichever tile a pixel is rendered in.

Everything physical is in micrometres and converted with mpp, so the same scene at mpp 0.5 looks like a 20x scan.

Slides and memory
-----------------
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
import functools
import json
import math
import os
import tempfile
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
import tifffile

# --------------------------------------------------------------------------------------------------------------
# Deterministic randomness: hashes of integer positions, and value noise built on them.

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX_A = np.uint64(0xBF58476D1CE4E5B9)
_MIX_B = np.uint64(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1


def _mix(z):
    """splitmix64 finaliser: scrambles every bit of z into every other."""
    z = (z ^ (z >> np.uint64(30))) * _MIX_A
    z = (z ^ (z >> np.uint64(27))) * _MIX_B
    return z ^ (z >> np.uint64(31))


def _hash(key: int, *ints) -> np.ndarray:
    """64-bit hash of a key and integer arrays (broadcast): the random numbers of lattice sites."""
    with np.errstate(over="ignore"):
        h = np.asarray(key & _MASK64, dtype=np.uint64)
        for a in ints:
            a = np.asarray(a, dtype=np.int64).astype(np.uint64)
            h = _mix(h ^ _mix(a + _GOLDEN))
    return h


def _u01(key: int, *ints) -> np.ndarray:
    """Uniform floats in [0, 1), one per broadcast element of ints."""
    return (_hash(key, *ints) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _subkey(key: int, name: str) -> int:
    """A key for one named random stream of a scene, so streams never share numbers."""
    return int(_hash(key, zlib.crc32(name.encode())))


def _smoothstep(t):
    """3t² - 2t³: interpolation weights with zero slope at the lattice points (no creases)."""
    return t * t * (3.0 - 2.0 * t)


def _value_noise(u, v, key: int) -> np.ndarray:
    """Smooth noise in [0, 1] at lattice coordinates (u, v).

    A row u (1, W) with a column v (H, 1) is a grid and is interpolated separably (fast); other shapes hash a
    bounding box of lattice values when that is small, else the four corners of every point.
    """
    u = np.asarray(u, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    iu, iv = np.floor(u), np.floor(v)
    fu = _smoothstep(u - iu).astype(np.float32)
    fv = _smoothstep(v - iv).astype(np.float32)
    iu, iv = iu.astype(np.int64), iv.astype(np.int64)
    if u.ndim == 2 and v.ndim == 2 and u.shape[0] == 1 and v.shape[1] == 1:
        cols = np.arange(iu.min(), iu.max() + 2)
        rows = np.arange(iv.min(), iv.max() + 2)
        lattice = _u01(key, rows[:, None], cols[None, :]).astype(np.float32)
        ci, ri = iu[0] - cols[0], iv[:, 0] - rows[0]
        along_x = lattice[:, ci] * (1 - fu) + lattice[:, ci + 1] * fu
        return along_x[ri] * (1 - fv) + along_x[ri + 1] * fv
    iu, iv, fu, fv = np.broadcast_arrays(iu, iv, fu, fv)
    c0, r0 = iu.min(initial=0), iv.min(initial=0)
    ncols, nrows = iu.max(initial=0) - c0 + 2, iv.max(initial=0) - r0 + 2
    if ncols * nrows <= iu.size:
        lattice = _u01(key, np.arange(r0, r0 + nrows)[:, None], np.arange(c0, c0 + ncols)[None, :]).astype(np.float32)
        iu, iv = iu - c0, iv - r0

        def corner(dr, dc):
            return lattice[iv + dr, iu + dc]
    else:
        def corner(dr, dc):
            return _u01(key, iv + dr, iu + dc).astype(np.float32)
    top = corner(0, 0) * (1 - fu) + corner(0, 1) * fu
    bottom = corner(1, 0) * (1 - fu) + corner(1, 1) * fu
    return top * (1 - fv) + bottom * fv


def _fbm(x, y, key: int, scale: float, octaves: int = 3) -> np.ndarray:
    """Fractal value noise of positions in µm: features of about `scale` µm and finer, values around 0.5."""
    total, norm, amp = 0.0, 0.0, 1.0
    for octave in range(octaves):
        total = total + amp * _value_noise(x / scale, y / scale, _subkey(key, str(octave)))
        norm += amp
        amp *= 0.5
        scale *= 0.5
    return total / norm


def _periodic_texture(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Blurred white noise that tiles seamlessly (blurred in the Fourier domain), scaled to unit deviation."""
    noise = rng.normal(0, 1, (size, size))
    freq = np.fft.fftfreq(size)
    gain = np.exp(-2 * (np.pi * sigma) ** 2 * (freq[:, None] ** 2 + freq[None, :] ** 2))
    texture = np.fft.ifft2(np.fft.fft2(noise) * gain).real
    return (texture / texture.std()).astype(np.float32)


# --------------------------------------------------------------------------------------------------------------
# Stain: concentrations -> Beer-Lambert optical density -> RGB.

_HEMATOXYLIN = np.array([0.60, 0.74, 0.32])  # OD per unit concentration, RGB (a Macenko-style reference)
_EOSIN = np.array([0.16, 0.82, 0.55])


@dataclass(frozen=True)
class _Stain:
    """One image's staining and scanner: stain vectors, illumination, blur and noise."""

    hematoxylin: np.ndarray
    eosin: np.ndarray
    white: np.ndarray  # RGB of empty glass
    blur_px: float
    noise: float


def _random_stain(rng: np.random.Generator, mpp: float) -> _Stain:
    """Perturbed stain vectors and strengths: labs, batches and scanners differ, and models must not care."""

    def perturb(vector, spread):
        v = np.clip(vector + rng.normal(0, spread, 3), 0.05, None)
        return v / np.linalg.norm(v)

    hema = perturb(_HEMATOXYLIN, 0.06) * rng.uniform(0.8, 1.2)
    eosin = perturb(_EOSIN, 0.05) * rng.uniform(0.7, 1.25)
    white = np.clip(rng.uniform(236, 250) + rng.normal(0, 2.5, 3), 225, 255)
    blur = float(np.clip(0.17 / mpp, 0.35, 1.2)) * rng.uniform(0.8, 1.2)
    return _Stain(hema, eosin, white, blur, float(rng.uniform(1.2, 2.6)))


# --------------------------------------------------------------------------------------------------------------
# Sprites: objects drawn into concentration canvases.


@dataclass
class _Canvas:
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
class _Nuclei:
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


def _draw_nuclei(canvas: _Canvas, nuclei: _Nuclei, bank: np.ndarray, mpp: float) -> None:
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
class _Sprite:
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

    def draw(self, canvas: _Canvas) -> None:
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


def _mitosis_sprite(cx: float, cy: float, seed: int, mpp: float, bank: np.ndarray) -> _Sprite:
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
    return _Sprite(int(ox[0]), int(oy[0]), chromatin, hema, halo[0] * rng.uniform(0.3, 1.0), 0.06,
                   rng.uniform(0.2, 0.5), True)


def _dead_cell_sprite(cx: float, cy: float, seed: int, mpp: float) -> _Sprite:
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
    return _Sprite(int(ox[0]), int(oy[0]), chromatin, hema, halo, 0.05, rng.uniform(0.75, 1.0), False)


# --------------------------------------------------------------------------------------------------------------
# The scene.

_CELL_SPACING = 12.5  # µm between neighbouring cell sites
_LYMPH_SPACING = 7.5  # µm, the denser lattice of stromal lymphocytes
_LUMEN_SPACING = 70.0  # µm
_NEST_LEVEL = 0.43  # fbm value above which tissue is tumour nest
_FIBRE_WIDTH = 2.4  # µm, the lattice step of fibre noise across the fibres
_OBJECT_REACH = 16.0  # µm: no object's footprint reaches further than this from its site


@dataclass(frozen=True)
class _Lattice:
    """A jittered hexagonal lattice of sites, spacing in µm."""

    spacing: float
    jitter: float
    key: int

    def sites(self, x0: float, y0: float, x1: float, y1: float):
        """Indices (i, j) and jittered centres (x, y) in µm of the sites within a µm box."""
        row = self.spacing * math.sqrt(3) / 2
        reach = self.jitter * self.spacing + self.spacing
        j = np.arange(math.floor((y0 - reach) / row), math.ceil((y1 + reach) / row) + 1)
        i = np.arange(math.floor((x0 - reach) / self.spacing), math.ceil((x1 + reach) / self.spacing) + 1)
        jj, ii = np.meshgrid(j, i, indexing="ij")
        ii, jj = ii.ravel(), jj.ravel()
        x, y = self.centres(ii, jj)
        keep = (x >= x0) & (x < x1) & (y >= y0) & (y < y1)
        return ii[keep], jj[keep], x[keep], y[keep]

    def centres(self, i, j):
        """Jittered centres in µm of sites (i, j)."""
        row = self.spacing * math.sqrt(3) / 2
        jx = _u01(self.key, i, j, 1) - 0.5
        jy = _u01(self.key, i, j, 2) - 0.5
        x = (i + 0.5 * (j & 1) + 2 * self.jitter * jx) * self.spacing
        y = (j + 2 * self.jitter * jy) * row
        return x, y

    def near(self, x, y):
        """Site indices (i, j) of the 5x3 neighbourhood of each point: (N, 15) arrays."""
        row = self.spacing * math.sqrt(3) / 2
        j0 = np.round(np.asarray(y) / row).astype(np.int64)
        i0 = np.round(np.asarray(x) / self.spacing).astype(np.int64)
        dj, di = np.meshgrid(np.arange(-1, 2), np.arange(-2, 3), indexing="ij")
        return i0[:, None] + di.ravel()[None], j0[:, None] + dj.ravel()[None]


class _Scene:
    """Everything one image or slide shows, as functions of position; rendered region by region."""

    def __init__(self, seed: int, mpp: float, tissue=None, pen=None, border_x: int | None = None):
        self.mpp = float(mpp)
        self.key = int(_hash(0x5EED, int(seed)))
        rng = np.random.default_rng([int(seed), 0x57A1])
        self.stain = _random_stain(rng, self.mpp)
        self.tissue = tissue  # None: tissue everywhere (a field)
        self.pen = pen
        self.border_x = border_x
        self.mitosis_rate = 0.0  # slides: probability that an eligible tumour site is a mitosis
        self.mitosis_keys = None  # fields: sorted site keys of the chosen mitoses, instead of the rate
        self.cells = _Lattice(_CELL_SPACING, 0.25, _subkey(self.key, "cells"))
        self.lymph = _Lattice(_LYMPH_SPACING, 0.3, _subkey(self.key, "lymph"))
        self.lumina = _Lattice(_LUMEN_SPACING, 0.25, _subkey(self.key, "lumina"))
        self.halo = int(math.ceil(3 * self.stain.blur_px)) + 1
        # Textures: chromatin granules (nuclear scale) and per-pixel sensor noise, tiled by absolute position.
        self.bank = _periodic_texture(rng, 256, 0.4 / self.mpp)
        self.mottle = _periodic_texture(rng, 521, 0.5 / self.mpp)
        self.grain = rng.normal(0, 1, (509, 509)).astype(np.float32)
        self.nest_key = _subkey(self.key, "nest")
        self.cytoplasm = rng.uniform(0.75, 1.3)  # how pink the tumour cytoplasm is
        self.membranes = rng.uniform(0.3, 0.9)  # how visible cell borders are in the nests
        self.fibre_direction = rng.uniform(0, np.pi)

    # ---- fields (positions in µm)

    def tissue_alpha(self, x, y) -> np.ndarray:
        """Opacity of the tissue at µm positions (1 everywhere in a field)."""
        shape = np.broadcast_shapes(np.shape(x), np.shape(y))
        if self.tissue is None:
            return np.ones(shape, np.float32)
        return self.tissue.alpha(x, y)

    def nest(self, x, y) -> np.ndarray:
        """Tumour-nest field at µm positions: above _NEST_LEVEL is tumour, below is stroma."""
        return _fbm(x, y, self.nest_key, 110.0, 3)

    def inflammation(self, x, y) -> np.ndarray:
        """Where stromal lymphocytes gather (high values)."""
        return _fbm(x, y, _subkey(self.key, "inflammation"), 160.0, 2)

    def fibre_angle(self, x, y) -> np.ndarray:
        """Direction of the dominant collagen fibres at points (radians): along the level lines of _fibre_noise."""
        direction = self.fibre_direction + np.pi / 2 * (self.fibre_choice(x, y) < 0.5)
        step = 0.5
        bend_dx = (self._bend(x + step, y) - self._bend(x - step, y)) / (2 * step)
        bend_dy = (self._bend(x, y + step) - self._bend(x, y - step)) / (2 * step)
        gx = -np.sin(direction) / _FIBRE_WIDTH + bend_dx
        gy = np.cos(direction) / _FIBRE_WIDTH + bend_dy
        return np.arctan2(gy, gx) + np.pi / 2

    def _bend(self, x, y):
        """Slow sideways shift of the fibres, in fibre widths."""
        return (_fbm(x, y, _subkey(self.key, "bend"), 180.0, 2) - 0.5) * 60.0

    def lumen_alpha(self, x, y) -> np.ndarray:
        """Alpha of lumina and fat holes at points (µm): 1 inside a hole."""
        x, y = np.atleast_1d(np.asarray(x, np.float64)), np.atleast_1d(np.asarray(y, np.float64))
        i, j = self.lumina.near(x.ravel(), y.ravel())
        params = self._lumen_params(i, j)
        sx, sy = self.lumina.centres(i, j)
        alpha = self._lumen_shape(x.ravel()[:, None] - sx, y.ravel()[:, None] - sy, params)
        return alpha.max(1).reshape(x.shape)

    def _lumen_params(self, i, j):
        """Shape of the hole at each lumen site (radius 0: no hole there)."""
        key = self.lumina.key
        present = _u01(key, i, j, 3) < 0.25
        radius = np.exp(np.log(3.0) + _u01(key, i, j, 4) ** 1.5 * np.log(22.0 / 3.0)) * present
        return dict(radius=radius, aspect=0.55 + 0.45 * _u01(key, i, j, 5), angle=_u01(key, i, j, 6) * np.pi,
                    wave=0.12 * _u01(key, i, j, 7), phase=_u01(key, i, j, 8) * 2 * np.pi)

    @staticmethod
    def _lumen_shape(dx, dy, p):
        """Alpha of irregular round holes at offsets (µm) from their centres; same formula for points and pixels."""
        ca, sa = np.cos(p["angle"]), np.sin(p["angle"])
        u = dx * ca + dy * sa
        v = (-dx * sa + dy * ca) / p["aspect"]
        r = np.sqrt(u * u + v * v)
        theta = np.arctan2(v, u)
        edge = p["radius"] * (1 + p["wave"] * np.cos(3 * theta + p["phase"]))
        return np.clip((edge - r) / 0.8 + 0.5, 0, 1) * (p["radius"] > 0)

    # ---- sites

    def _cell_kinds(self, i, j, x, y):
        """Kind of each cell site: 0 none, 1 tumour, 2 mitosis, 3 dead cell, 4 lymphocyte, 5 fibroblast."""
        key = self.cells.key
        inside = (self.tissue_alpha(x, y) > 0.5) & (self.lumen_alpha(x, y) < 0.02)
        nest = self.nest(x, y)
        tumour = inside & (nest > _NEST_LEVEL + 0.012)
        stroma = inside & (nest < _NEST_LEVEL - 0.012)
        u = _u01(key, i, j, 10)
        eligible = tumour & (i % 2 == 0) & (j % 2 == 0)
        if self.mitosis_keys is not None:
            mitosis = tumour & np.isin(_site_key(i, j), self.mitosis_keys)
        else:
            mitosis = eligible & (_u01(key, i, j, 11) < self.mitosis_rate)
            if self.tissue is not None and mitosis.any():
                # Whole figures on tissue, so the slide truth is what a reader sees.
                for dx, dy in ((-8, -8), (8, -8), (-8, 8), (8, 8)):
                    mitosis &= self.tissue_alpha(x + dx, y + dy) > 0.5
        kind = np.zeros(len(i), np.int8)
        kind[tumour] = 1
        kind[tumour & (u < 0.045)] = 4
        kind[tumour & (u < 0.02)] = 3
        kind[stroma & (u < 0.28)] = 5
        kind[mitosis] = 2
        return kind

    def mitosis_sprite(self, i, j, x, y) -> _Sprite:
        """The mitotic figure of cell site (i, j) centred at (x, y) µm."""
        seed = int(_hash(self.cells.key, i, j, 12))
        return _mitosis_sprite(x / self.mpp, y / self.mpp, seed, self.mpp, self.bank)

    def _nuclei(self, i, j, x, y, kind: str, key: int) -> _Nuclei:
        """Attributes of a batch of nuclei of one kind, from the hashes of their sites."""
        n = len(i)

        def u(k):
            return _u01(key, i, j, 20 + k)

        mpp = self.mpp
        harmonics = np.stack([np.stack([u(10 + k) * 0.06 / (k + 1), u(20 + k) * 2 * np.pi], 1) for k in range(3)], 1)
        if kind == "tumour":
            a = (3.5 + 2.3 * u(0) ** 1.5) / mpp
            b = a * (0.68 + 0.3 * u(1))
            density = 0.55 + 0.4 * u(2)
            texture = 0.4 + 0.3 * u(3)
            rim = 0.5 + 0.5 * u(4)
            nucleolus = np.where(u(5) < 0.6, (0.45 + 0.5 * u(6)) / mpp, 0.0)
            keep = np.full(n, 0.6)
            angle = u(7) * np.pi
        elif kind == "lymphocyte":
            a = (2.1 + 0.8 * u(0)) / mpp
            b = a * (0.88 + 0.12 * u(1))
            harmonics[:, :, 0] *= 0.2
            density = 1.8 + 0.8 * u(2)
            texture = 0.08 + 0.06 * u(3)
            rim = np.full(n, 0.1)
            nucleolus = np.zeros(n)
            keep = np.full(n, 0.4)
            angle = u(7) * np.pi
        else:  # fibroblast: spindle along the fibres
            a = (4.0 + 3.5 * u(0)) / mpp
            b = (0.8 + 0.7 * u(1)) / mpp
            harmonics[:, :, 0] *= 0.3
            density = 0.8 + 0.5 * u(2)
            texture = 0.15 + 0.1 * u(3)
            rim = np.full(n, 0.15)
            nucleolus = np.zeros(n)
            keep = np.full(n, 0.5)
            angle = self.fibre_angle(x, y) + (u(7) - 0.5) * 0.3
        return _Nuclei(x / mpp, y / mpp, a, b, angle, harmonics, density, texture, rim, nucleolus, keep,
                       _hash(key, i, j, 99))

    # ---- rendering

    def _smooth_fields(self, gx0: int, gy0: int, gw: int, gh: int) -> dict:
        """Slowly varying fields of a px box, sampled every few px at absolute positions and interpolated."""
        step = max(1, round(0.75 / self.mpp))
        cols, kx, fx = _coarse_axis(gx0, gw, step)
        rows, ky, fy = _coarse_axis(gy0, gh, step)
        xu, yu = (cols * self.mpp)[None, :], (rows * self.mpp)[:, None]
        coarse = {
            "nest": self.nest(xu, yu),
            "fibre_choice": self.fibre_choice(xu, yu),
            "loose": _fbm(xu, yu, _subkey(self.key, "loose"), 45.0, 2),
            "cleft": _fbm(xu, yu, _subkey(self.key, "cleft"), 80.0, 2),
            "thickness": _fbm(xu, yu, _subkey(self.key, "thickness"), 400.0, 2),
        }
        coarse["fibre0"], coarse["fibre1"] = self._fibre_noise(xu, yu)
        coarse["membrane"], coarse["shade"] = self._cell_borders(xu, yu)
        if self.tissue is not None:
            coarse["tissue"] = self.tissue.level(xu, yu)
        return {name: _interpolate(f, ky, fy, kx, fx) for name, f in coarse.items()}

    def _cell_borders(self, xu, yu):
        """On a grid: how far each point is from the border between its two nearest cell sites (µm), and a shade
        that is constant per cell. Borders of this Voronoi tiling are the cell membranes of the nests."""
        reach = 1.3 * self.cells.spacing
        step = float(xu[0, 1] - xu[0, 0])
        i, j, x, y = self.cells.sites(xu[0, 0] - reach, yu[0, 0] - reach, xu[0, -1] + reach, yu[-1, 0] + reach)
        tone = _u01(self.cells.key, i, j, 30).astype(np.float32)
        shape = (yu.shape[0], xu.shape[1])
        near, second = np.full(shape, 1e9, np.float32), np.full(shape, 1e9, np.float32)
        shade = np.zeros(shape, np.float32)
        for k in range(len(i)):
            c0, c1 = max(int((x[k] - reach - xu[0, 0]) / step), 0), int((x[k] + reach - xu[0, 0]) / step) + 2
            r0, r1 = max(int((y[k] - reach - yu[0, 0]) / step), 0), int((y[k] + reach - yu[0, 0]) / step) + 2
            if c0 >= shape[1] or r0 >= shape[0] or c1 <= 0 or r1 <= 0:
                continue
            d = np.sqrt(np.square(xu[:, c0:c1] - x[k]) + np.square(yu[r0:r1] - y[k])).astype(np.float32)
            n1, n2, sh = near[r0:r1, c0:c1], second[r0:r1, c0:c1], shade[r0:r1, c0:c1]
            closer = d < n1
            n2[...] = np.where(closer, n1, np.minimum(n2, d))
            n1[...] = np.minimum(n1, d)
            sh[closer] = tone[k]
        return (second - near) / 2, shade

    def _ground(self, f: dict, xu, yu):
        """Concentrations of stroma, cytoplasm and clefts, from the smooth fields at full resolution."""
        in_nest = np.clip((f["nest"] - _NEST_LEVEL) / 0.01 + 0.5, 0, 1)
        # Collagen: ridges where the fibre noise crosses 0.5, one of two directions dominating each region.
        first = np.clip((f["fibre_choice"] - 0.5) * 8 + 0.5, 0, 1)
        fibres = first * (1 - np.abs(2 * f["fibre0"] - 1)) ** 3 + (1 - first) * (1 - np.abs(2 * f["fibre1"] - 1)) ** 3
        e_stroma = (0.4 + 0.6 * fibres) * np.clip(2.5 * f["loose"] - 0.3, 0.1, 1.2)
        mottle = self._absolute(self.mottle, xu, yu)
        membrane = np.exp(-np.square(f["membrane"] / 0.35))
        e_cyto = self.cytoplasm * 0.7 * (0.85 + 0.3 * f["shade"] + 0.1 * mottle + self.membranes * membrane)
        h_cyto = 0.12 * (1 + 0.2 * mottle) + 0.1 * self.membranes * membrane
        eosin = e_stroma + in_nest * (e_cyto - e_stroma)
        hema = 0.03 + in_nest * (h_cyto - 0.03)
        # White retraction clefts around parts of the nests.
        cleft = np.clip(1 - np.abs(f["nest"] - _NEST_LEVEL) / 0.008, 0, 1)
        cleft *= np.clip((f["cleft"] - 0.58) * 6, 0, 1)
        return hema * (1 - cleft), eosin * (1 - cleft)

    def _fibre_noise(self, xu, yu):
        """Noise stretched along the two fibre directions and bent by a slow warp; its 0.5 level lines are the
        collagen fibres (see _ground)."""
        bend = self._bend(xu, yu)
        noise = []
        for k in range(2):
            direction = self.fibre_direction + k * np.pi / 2
            c, s = math.cos(direction), math.sin(direction)
            along = (xu * c + yu * s) / 30.0
            across = (-xu * s + yu * c) / _FIBRE_WIDTH + bend
            noise.append(_value_noise(along, across, _subkey(self.key, f"fibre{k}")))
        return noise

    def fibre_choice(self, x, y):
        """Above 0.5 the fibres run along fibre_direction, below across it."""
        return _fbm(x, y, _subkey(self.key, "fibre-choice"), 250.0, 2)

    def _absolute(self, texture, xu, yu):
        """A periodic texture sampled at the absolute pixel positions of a grid."""
        cols = np.round(xu[0] / self.mpp).astype(np.int64) % texture.shape[1]
        rows = np.round(yu[:, 0] / self.mpp).astype(np.int64) % texture.shape[0]
        return texture[np.ix_(rows, cols)]

    def render(self, x0: int, y0: int, w: int, h: int):
        """RGB uint8 (h, w, 3) and mitosis mask (h, w) of the level-0 pixel box at (x0, y0)."""
        m = self.halo
        gx0, gy0, gw, gh = x0 - m, y0 - m, w + 2 * m, h + 2 * m
        xu = ((gx0 + np.arange(gw)) * self.mpp)[None, :]
        yu = ((gy0 + np.arange(gh)) * self.mpp)[:, None]
        canvas = _Canvas(gx0, gy0, np.zeros((gh, gw), np.float32), np.zeros((gh, gw), np.float32),
                         np.zeros((gh, gw), bool))
        if self.tissue is None or self.tissue.touches(gx0 * self.mpp, gy0 * self.mpp, (gx0 + gw) * self.mpp,
                                                      (gy0 + gh) * self.mpp):
            fields = self._smooth_fields(gx0, gy0, gw, gh)
            canvas.hema, canvas.eosin = self._ground(fields, xu, yu)
            self._draw_lumina(canvas, xu, yu)
            self._draw_cells(canvas)
            tissue = 0.85 + 0.3 * fields["thickness"]
            if self.tissue is not None:
                tissue *= self.tissue.alpha_of_level(fields["tissue"])
            canvas.hema *= tissue
            canvas.eosin *= tissue
        pen_od = None if self.pen is None else self.pen.optical_density(gx0, gy0, gw, gh)
        rgb = self._to_rgb(canvas.hema, canvas.eosin, pen_od)
        rgb = cv2.GaussianBlur(rgb, (0, 0), self.stain.blur_px)[m:m + h, m:m + w]
        grain = self._absolute(self.grain, xu[:, m:m + w], yu[m:m + h])
        rgb += (self.stain.noise * grain)[:, :, None]
        out = np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
        if self.border_x is not None and x0 + w > self.border_x:
            out[:, max(self.border_x - x0, 0):] = 0
        return out, canvas.mask[m:m + h, m:m + w].astype(np.uint8)

    def _to_rgb(self, hema, eosin, pen_od):
        """Beer-Lambert: transmitted light through the stains (and ink) of each pixel, float RGB."""
        st = self.stain
        rgb = np.empty(hema.shape + (3,), np.float32)
        for c in range(3):
            od = hema * np.float32(st.hematoxylin[c]) + eosin * np.float32(st.eosin[c]) + np.float32(0.012)
            if pen_od is not None:
                od += pen_od[c]
            rgb[:, :, c] = np.float32(st.white[c]) * np.exp(-od)
        return rgb

    def _draw_lumina(self, canvas: _Canvas, xu, yu):
        """Clear the stain inside lumina and fat holes that overlap the canvas."""
        h, w = canvas.hema.shape
        i, j, sx, sy = self.lumina.sites(xu[0, 0] - 40, yu[0, 0] - 40, xu[0, -1] + 40, yu[-1, 0] + 40)
        p = self._lumen_params(i, j)
        for k in np.nonzero(p["radius"] > 0)[0]:
            reach = p["radius"][k] * 1.2 + 1
            c0 = max(int((sx[k] - reach) / self.mpp) - canvas.x0, 0)
            c1 = min(int((sx[k] + reach) / self.mpp) + 1 - canvas.x0, w)
            r0 = max(int((sy[k] - reach) / self.mpp) - canvas.y0, 0)
            r1 = min(int((sy[k] + reach) / self.mpp) + 1 - canvas.y0, h)
            if c0 >= c1 or r0 >= r1:
                continue
            one = {name: value[k] for name, value in p.items()}
            alpha = self._lumen_shape(xu[:, c0:c1] - sx[k], yu[r0:r1] - sy[k], one).astype(np.float32)
            canvas.hema[r0:r1, c0:c1] *= 1 - alpha
            canvas.eosin[r0:r1, c0:c1] *= 1 - alpha

    def _draw_cells(self, canvas: _Canvas):
        """Every nucleus, dead cell and mitosis whose footprint overlaps the canvas, in a fixed order."""
        h, w = canvas.hema.shape
        box = (canvas.x0 * self.mpp - _OBJECT_REACH, canvas.y0 * self.mpp - _OBJECT_REACH,
               (canvas.x0 + w) * self.mpp + _OBJECT_REACH, (canvas.y0 + h) * self.mpp + _OBJECT_REACH)
        i, j, x, y = self.cells.sites(*box)
        kind = self._cell_kinds(i, j, x, y)
        for code, name in ((5, "fibroblast"), (1, "tumour")):
            sel = kind == code
            nuclei = self._nuclei(i[sel], j[sel], x[sel], y[sel], name, self.cells.key)
            _draw_nuclei(canvas, nuclei, self.bank, self.mpp)
        li, lj, lx, ly = self.lymph.sites(*box)
        infl = self.inflammation(lx, ly)
        inside = (self.tissue_alpha(lx, ly) > 0.5) & (self.lumen_alpha(lx, ly) < 0.02)
        stromal = inside & (self.nest(lx, ly) < _NEST_LEVEL - 0.02)
        lymph = stromal & (_u01(self.lymph.key, li, lj, 1) < np.clip((infl - 0.64) * 6, 0, 0.8))
        sel = kind == 4
        both = (np.concatenate([i[sel], li[lymph]]), np.concatenate([j[sel], lj[lymph] + (1 << 30)]),
                np.concatenate([x[sel], lx[lymph]]), np.concatenate([y[sel], ly[lymph]]))
        _draw_nuclei(canvas, self._nuclei(*both, "lymphocyte", self.lymph.key), self.bank, self.mpp)
        for k in np.nonzero(kind == 3)[0]:
            seed = int(_hash(self.cells.key, i[k], j[k], 13))
            _dead_cell_sprite(x[k] / self.mpp, y[k] / self.mpp, seed, self.mpp).draw(canvas)
        for k in np.nonzero(kind == 2)[0]:
            self.mitosis_sprite(i[k], j[k], x[k], y[k]).draw(canvas)


def _coarse_axis(start: int, count: int, step: int):
    """Sample positions (absolute px, multiples of step) covering [start, start + count), and for every pixel the
    index of the sample at or before it and its fraction of the way to the next."""
    first = start // step
    samples = step * np.arange(first, (start + count - 1) // step + 2)
    offset = start + np.arange(count) - step * first
    return samples, offset // step, (offset % step / step).astype(np.float32)


def _interpolate(coarse, ky, fy, kx, fx):
    """Bilinear interpolation of coarse samples to every pixel (indices and fractions from _coarse_axis)."""
    along_x = coarse[:, kx] * (1 - fx) + coarse[:, kx + 1] * fx
    return along_x[ky] * (1 - fy)[:, None] + along_x[ky + 1] * fy[:, None]


def _site_key(i, j):
    """One int64 per cell site, for set membership."""
    return (np.asarray(j, np.int64) << 32) + np.asarray(i, np.int64)


# --------------------------------------------------------------------------------------------------------------
# High-power fields.


@dataclass
class SynthField:
    """A synthetic field: RGB image, mitosis mask (1 = mitosis), mask centroids as (x, y) = (column, row)."""

    image: np.ndarray
    mask: np.ndarray
    centroids: np.ndarray
    mpp: float


def _pair(size) -> tuple[int, int]:
    """(height, width) from an int (square) or a pair."""
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


def make_field(size=(1024, 1024), mpp: float = 0.25, seed: int = 0, n_mitoses: int | None = None) -> SynthField:
    """A high-power field of breast carcinoma, size (h, w) pixels at mpp µm/px, with exact mitosis truth.

    n_mitoses None draws a realistic count for a mitotic hotspot (about 25 per mm², at least one where a whole
    figure fits); an explicit count that does not fit is a ValueError.
    """
    h, w = _pair(size)
    rng = np.random.default_rng([int(seed), 0xF1E1D])
    area_mm2 = h * w * mpp * mpp / 1e6
    drawn = n_mitoses is None
    if drawn:
        n_mitoses = 1 + int(rng.poisson(25 * area_mm2))
    scene = _Scene(seed, mpp)
    x0, y0 = _tumour_rich_origin(scene, rng, h, w)
    i, j, x, y = scene.cells.sites(x0 * mpp, y0 * mpp, (x0 + w) * mpp, (y0 + h) * mpp)
    tumour = np.nonzero(scene._cell_kinds(i, j, x, y) == 1)[0]
    # Random tumour nuclei become mitoses, whole figures inside the field and at least 16 µm apart.
    chosen, centroids = [], []
    for k in rng.permutation(tumour):
        if len(chosen) == n_mitoses:
            break
        if any(math.hypot(x[k] - x[c], y[k] - y[c]) < 16.0 for c in chosen):
            continue
        sprite = scene.mitosis_sprite(i[k], j[k], x[k], y[k])
        rows, cols = np.nonzero(sprite.chromatin >= 0.5)
        if (sprite.ox + cols.min() >= x0 and sprite.ox + cols.max() < x0 + w and
                sprite.oy + rows.min() >= y0 and sprite.oy + rows.max() < y0 + h):
            chosen.append(k)
            centroids.append(sprite.centroid())
    if len(chosen) < n_mitoses and not drawn:
        raise ValueError(f"a {h}x{w} field at {mpp} µm/px has room for at most {len(chosen)} mitoses")
    chosen = np.array(chosen, np.int64)
    scene.mitosis_keys = np.sort(_site_key(i[chosen], j[chosen]))
    image, mask = scene.render(x0, y0, w, h)
    centroids = np.array(centroids, np.float64).reshape(-1, 2) - [x0, y0]
    return SynthField(image, mask, centroids, float(mpp))


def _tumour_rich_origin(scene: _Scene, rng: np.random.Generator, h: int, w: int) -> tuple[int, int]:
    """Top-left px of a field that is mostly tumour, as pathologists choose high-power fields."""
    best, best_share = (0, 0), -1.0
    for _ in range(12):
        x0, y0 = (int(v) for v in rng.integers(0, 200_000, 2))
        xs = (x0 + np.linspace(0, w, 12))[None, :] * scene.mpp
        ys = (y0 + np.linspace(0, h, 12))[:, None] * scene.mpp
        share = float((scene.nest(xs, ys) > _NEST_LEVEL).mean())
        if share > best_share:
            best, best_share = (x0, y0), share
        if share >= 0.6:
            break
    return best


def write_fields(out_dir, n: int = 8, size=1024, mpp: float = 0.25, seed: int = 0,
                 n_mitoses: int | None = None) -> list[Path]:
    """Write n fields as field_000.png (RGB) + field_000_mask.png (0/255), centroids.csv (image,x,y) and
    fields.json (mpp, seeds). Returns the image paths. The same arguments give byte-identical files.

    The PNGs record the mpp in their pHYs resolution chunk, so ``open_slide`` finds it without ``--mpp``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    h, w = _pair(size)
    seeds = [int(s) for s in np.random.SeedSequence(int(seed)).generate_state(n, np.uint32)]
    paths, rows, records = [], [], []
    for index, field_seed in enumerate(seeds):
        f = make_field((h, w), mpp=mpp, seed=field_seed, n_mitoses=n_mitoses)
        stem = f"field_{index:03d}"
        path = out / f"{stem}.png"
        dpi = (25400.0 / mpp, 25400.0 / mpp)
        Image.fromarray(f.image).save(path, dpi=dpi)
        Image.fromarray(f.mask * np.uint8(255)).save(out / f"{stem}_mask.png", dpi=dpi)
        rows += [(stem, f"{x:.2f}", f"{y:.2f}") for x, y in f.centroids]
        records.append({"image": stem, "seed": field_seed, "mitoses": len(f.centroids)})
        paths.append(path)
    with open(out / "centroids.csv", "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["image", "x", "y"])
        writer.writerows(rows)
    meta = {"generator": "wsimito.synth.write_fields", "mpp": float(mpp), "seed": int(seed), "size": [h, w],
            "fields": records}
    (out / "fields.json").write_text(json.dumps(meta, indent=2) + "\n")
    return paths


# --------------------------------------------------------------------------------------------------------------
# Whole slides: layout (tissue pieces, pen, scanner border), truth, and the pyramidal TIFF.


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
        near = _grid_map(lambda x, y: self.level(x, y) > -self.slope * self.grid, gx, gy).astype(np.uint8)
        grow = int(math.ceil((_OBJECT_REACH + 4) / self.grid)) + 1  # object reach and blur
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
        level = best + 0.7 * (_fbm(x, y, self.key, self.scale, 4) - 0.5)
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


def _grid_map(fn, xs, ys, rows: int = 128) -> np.ndarray:
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
        ragged = self.half * (1 + 0.06 * (_fbm(xu, yu, self.key, 60.0, 3) - 0.5))
        density = 0.8 + 0.4 * _fbm(xu, yu, _subkey(self.key, "ink"), 150.0, 2)
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


def _slide_scene(h: int, w: int, mpp: float, seed: int, mitoses_per_mm2: float, pen: bool, border: bool):
    """The scene of a synthetic slide, with its tissue pieces, pen stroke and scanner border."""
    rng = np.random.default_rng([int(seed), 0x511DE])
    key = int(_hash(0x11A0, int(seed)))
    width_um, height_um = w * mpp, h * mpp
    border_x = max(64, round(0.02 * w)) if border else 0
    margin = 0.05 * min(width_um, height_um)
    bounds = (margin, margin, width_um - border_x * mpp - margin, height_um - margin)
    pieces = _place_pieces(rng, bounds, _subkey(key, "pieces"))
    stroke = _draw_pen(rng, pieces, width_um - border_x * mpp, height_um, mpp, _subkey(key, "pen")) if pen else None
    scene = _Scene(seed, mpp, tissue=pieces, pen=stroke, border_x=(w - border_x) if border else None)
    # Mitosis rate per eligible tumour site so that the slide has about mitoses_per_mm2 per mm² of tissue.
    g = max(8.0, max(width_um, height_um) / 1024)
    gx, gy = np.arange(g / 2, width_um, g), np.arange(g / 2, height_um, g)
    tissue = _grid_map(lambda x, y: pieces.level(x, y) > 0, gx, gy)
    tumour = tissue & _grid_map(lambda x, y: scene.nest(x, y) > _NEST_LEVEL, gx, gy)
    eligible_per_mm2 = 1e6 / (_CELL_SPACING ** 2 * math.sqrt(3) / 2) / 4
    if tumour.any():
        scene.mitosis_rate = min(1.0, mitoses_per_mm2 * tissue.sum() / tumour.sum() / eligible_per_mm2)
    return scene


def _slide_mitoses(scene: _Scene, h: int, w: int) -> np.ndarray:
    """Mask centroids (x, y) in level-0 px of every mitosis of a slide scene, found site by site in bands."""
    found = []
    band = 400.0  # µm of slide height per pass, to bound memory
    y = 0.0
    while y < h * scene.mpp:
        i, j, x, yy = scene.cells.sites(0, y, w * scene.mpp, min(y + band, h * scene.mpp))
        eligible = (i % 2 == 0) & (j % 2 == 0) & (_u01(scene.cells.key, i, j, 11) < scene.mitosis_rate)
        i, j, x, yy = i[eligible], j[eligible], x[eligible], yy[eligible]
        for k in np.nonzero(scene._cell_kinds(i, j, x, yy) == 2)[0]:
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


def _level0_tiles(scene: _Scene, shape, tile: int, level1: _RawLevel | None, workers: int):
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


def _tissue_truth(scene: _Scene, h: int, w: int):
    """Low-resolution tissue mask (bool), its downsample (a power of two, long side at most 2048), area in mm²."""
    ds = 1
    while max(h, w) / ds > 2048:
        ds *= 2
    xs = ((np.arange(-(-w // ds)) + 0.5) * ds - 0.5) * scene.mpp
    ys = ((np.arange(-(-h // ds)) + 0.5) * ds - 0.5) * scene.mpp
    mask = _grid_map(lambda x, y: scene.tissue.level(x, y) > 0, xs, ys)
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
    h, w = _pair(size)
    workers = workers or min(4, os.cpu_count() or 1)
    scene = _slide_scene(h, w, mpp, seed, mitoses_per_mm2, pen, border)
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


def _write_truth(folder: Path, path: Path, scene: _Scene, h, w, seed, flavour, shapes, tile, mitoses_per_mm2, pen,
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


def mitosis_boxes(mask: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """The exact box of each mitosis (NaN where it has no mask pixels): the union of the mask components
    nearest to its centroid (an anaphase has two)."""
    count, labels, stats, centres = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    boxes = np.full((len(centroids), 4), np.nan)
    for index in range(1, count if len(centroids) else 1):
        owner = int(np.argmin(np.hypot(*(centroids - centres[index]).T)))
        x, y, w, h = stats[index, :4]
        box = np.array([x, y, x + w, y + h], float)
        boxes[owner] = box if np.isnan(boxes[owner, 0]) else np.r_[np.minimum(boxes[owner, :2], box[:2]),
                                                                   np.maximum(boxes[owner, 2:], box[2:])]
    return boxes
