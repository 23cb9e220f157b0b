"""The scene: everything one image or slide shows, as a function of the seed and the position in µm.

Because the scene is a pure function of position, any level-0 pixel box renders on its own and agrees with its
neighbours to the pixel: that is what makes tiled slides seamless. Cells sit on a jittered hexagonal lattice
12.5 µm apart (the Voronoi borders between sites are the membranes of the tumour cells). A site's kind (tumour
nucleus, mitosis, lymphocyte, pyknotic/apoptotic nucleus, fibroblast, nothing) and its attributes are hashes of
its index and of the smooth fields at its centre, and a region draws every object whose footprint overlaps it,
always in the same order. Everything physical is in micrometres and converted with mpp, so the same scene at
mpp 0.5 looks like a 20x scan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from wsimito.synth.noise import fbm, hash64, periodic_texture, subkey, u01, value_noise
from wsimito.synth.sprites import Canvas, Nuclei, Sprite, dead_cell, draw_nuclei, mitotic_figure
from wsimito.synth.stain import random_stain

CELL_SPACING = 12.5  # µm between neighbouring cell sites
_LYMPH_SPACING = 7.5  # µm, the denser lattice of stromal lymphocytes
_LUMEN_SPACING = 70.0  # µm
NEST_LEVEL = 0.43  # fbm value above which tissue is tumour nest
_FIBRE_WIDTH = 2.4  # µm, the lattice step of fibre noise across the fibres
OBJECT_REACH = 16.0  # µm: no object's footprint reaches further than this from its site


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
        jx = u01(self.key, i, j, 1) - 0.5
        jy = u01(self.key, i, j, 2) - 0.5
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


class Scene:
    """Everything one image or slide shows, as functions of position; rendered region by region."""

    def __init__(self, seed: int, mpp: float, tissue=None, pen=None, border_x: int | None = None):
        self.mpp = float(mpp)
        self.key = int(hash64(0x5EED, int(seed)))
        rng = np.random.default_rng([int(seed), 0x57A1])
        self.stain = random_stain(rng, self.mpp)
        self.tissue = tissue  # None: tissue everywhere (a field)
        self.pen = pen
        self.border_x = border_x
        self.mitosis_rate = 0.0  # slides: probability that an eligible tumour site is a mitosis
        self.mitosis_keys = None  # fields: sorted site keys of the chosen mitoses, instead of the rate
        self.cells = _Lattice(CELL_SPACING, 0.25, subkey(self.key, "cells"))
        self.lymph = _Lattice(_LYMPH_SPACING, 0.3, subkey(self.key, "lymph"))
        self.lumina = _Lattice(_LUMEN_SPACING, 0.25, subkey(self.key, "lumina"))
        self.halo = int(math.ceil(3 * self.stain.blur_px)) + 1
        # Textures: chromatin granules (nuclear scale) and per-pixel sensor noise, tiled by absolute position.
        self.bank = periodic_texture(rng, 256, 0.4 / self.mpp)
        self.mottle = periodic_texture(rng, 521, 0.5 / self.mpp)
        self.grain = rng.normal(0, 1, (509, 509)).astype(np.float32)
        self.nest_key = subkey(self.key, "nest")
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
        """Tumour-nest field at µm positions: above NEST_LEVEL is tumour, below is stroma."""
        return fbm(x, y, self.nest_key, 110.0, 3)

    def inflammation(self, x, y) -> np.ndarray:
        """Where stromal lymphocytes gather (high values)."""
        return fbm(x, y, subkey(self.key, "inflammation"), 160.0, 2)

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
        return (fbm(x, y, subkey(self.key, "bend"), 180.0, 2) - 0.5) * 60.0

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
        present = u01(key, i, j, 3) < 0.25
        radius = np.exp(np.log(3.0) + u01(key, i, j, 4) ** 1.5 * np.log(22.0 / 3.0)) * present
        return dict(radius=radius, aspect=0.55 + 0.45 * u01(key, i, j, 5), angle=u01(key, i, j, 6) * np.pi,
                    wave=0.12 * u01(key, i, j, 7), phase=u01(key, i, j, 8) * 2 * np.pi)

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

    def cell_kinds(self, i, j, x, y):
        """Kind of each cell site: 0 none, 1 tumour, 2 mitosis, 3 dead cell, 4 lymphocyte, 5 fibroblast."""
        key = self.cells.key
        inside = (self.tissue_alpha(x, y) > 0.5) & (self.lumen_alpha(x, y) < 0.02)
        nest = self.nest(x, y)
        tumour = inside & (nest > NEST_LEVEL + 0.012)
        stroma = inside & (nest < NEST_LEVEL - 0.012)
        u = u01(key, i, j, 10)
        eligible = tumour & (i % 2 == 0) & (j % 2 == 0)
        if self.mitosis_keys is not None:
            mitosis = tumour & np.isin(site_key(i, j), self.mitosis_keys)
        else:
            mitosis = eligible & (u01(key, i, j, 11) < self.mitosis_rate)
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

    def mitosis_sprite(self, i, j, x, y) -> Sprite:
        """The mitotic figure of cell site (i, j) centred at (x, y) µm."""
        seed = int(hash64(self.cells.key, i, j, 12))
        return mitotic_figure(x / self.mpp, y / self.mpp, seed, self.mpp, self.bank)

    def _nuclei(self, i, j, x, y, kind: str, key: int) -> Nuclei:
        """Attributes of a batch of nuclei of one kind, from the hashes of their sites."""
        n = len(i)

        def u(k):
            return u01(key, i, j, 20 + k)

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
        return Nuclei(x / mpp, y / mpp, a, b, angle, harmonics, density, texture, rim, nucleolus, keep,
                       hash64(key, i, j, 99))

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
            "loose": fbm(xu, yu, subkey(self.key, "loose"), 45.0, 2),
            "cleft": fbm(xu, yu, subkey(self.key, "cleft"), 80.0, 2),
            "thickness": fbm(xu, yu, subkey(self.key, "thickness"), 400.0, 2),
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
        tone = u01(self.cells.key, i, j, 30).astype(np.float32)
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
        in_nest = np.clip((f["nest"] - NEST_LEVEL) / 0.01 + 0.5, 0, 1)
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
        cleft = np.clip(1 - np.abs(f["nest"] - NEST_LEVEL) / 0.008, 0, 1)
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
            noise.append(value_noise(along, across, subkey(self.key, f"fibre{k}")))
        return noise

    def fibre_choice(self, x, y):
        """Above 0.5 the fibres run along fibre_direction, below across it."""
        return fbm(x, y, subkey(self.key, "fibre-choice"), 250.0, 2)

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
        canvas = Canvas(gx0, gy0, np.zeros((gh, gw), np.float32), np.zeros((gh, gw), np.float32),
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
        rgb = self.stain.to_rgb(canvas.hema, canvas.eosin, pen_od)
        rgb = cv2.GaussianBlur(rgb, (0, 0), self.stain.blur_px)[m:m + h, m:m + w]
        grain = self._absolute(self.grain, xu[:, m:m + w], yu[m:m + h])
        rgb += (self.stain.noise * grain)[:, :, None]
        out = np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
        if self.border_x is not None and x0 + w > self.border_x:
            out[:, max(self.border_x - x0, 0):] = 0
        return out, canvas.mask[m:m + h, m:m + w].astype(np.uint8)

    def _draw_lumina(self, canvas: Canvas, xu, yu):
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

    def _draw_cells(self, canvas: Canvas):
        """Every nucleus, dead cell and mitosis whose footprint overlaps the canvas, in a fixed order."""
        h, w = canvas.hema.shape
        box = (canvas.x0 * self.mpp - OBJECT_REACH, canvas.y0 * self.mpp - OBJECT_REACH,
               (canvas.x0 + w) * self.mpp + OBJECT_REACH, (canvas.y0 + h) * self.mpp + OBJECT_REACH)
        i, j, x, y = self.cells.sites(*box)
        kind = self.cell_kinds(i, j, x, y)
        for code, name in ((5, "fibroblast"), (1, "tumour")):
            sel = kind == code
            nuclei = self._nuclei(i[sel], j[sel], x[sel], y[sel], name, self.cells.key)
            draw_nuclei(canvas, nuclei, self.bank, self.mpp)
        li, lj, lx, ly = self.lymph.sites(*box)
        infl = self.inflammation(lx, ly)
        inside = (self.tissue_alpha(lx, ly) > 0.5) & (self.lumen_alpha(lx, ly) < 0.02)
        stromal = inside & (self.nest(lx, ly) < NEST_LEVEL - 0.02)
        lymph = stromal & (u01(self.lymph.key, li, lj, 1) < np.clip((infl - 0.64) * 6, 0, 0.8))
        sel = kind == 4
        both = (np.concatenate([i[sel], li[lymph]]), np.concatenate([j[sel], lj[lymph] + (1 << 30)]),
                np.concatenate([x[sel], lx[lymph]]), np.concatenate([y[sel], ly[lymph]]))
        draw_nuclei(canvas, self._nuclei(*both, "lymphocyte", self.lymph.key), self.bank, self.mpp)
        for k in np.nonzero(kind == 3)[0]:
            seed = int(hash64(self.cells.key, i[k], j[k], 13))
            dead_cell(x[k] / self.mpp, y[k] / self.mpp, seed, self.mpp).draw(canvas)
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


def site_key(i, j):
    """One int64 per cell site, for set membership."""
    return (np.asarray(j, np.int64) << 32) + np.asarray(i, np.int64)
