"""Where the tissue is: a mask on a thumbnail, and its area in mm².

Mitoses per mm² need the tissue area, and tiling only tissue saves most of a
slide's compute. The rules are colour rules that H&E makes reliable: glass is
bright and grey, scanner blanks and black ink are near black, and marker ink
(blue, green) has more green than red, which H&E never has (both stains
absorb green most).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from wsimito.config import TissueConfig


@dataclass(frozen=True)
class TissueMask:
    mask: np.ndarray  # bool, H x W at ``mpp``
    mpp: float  # µm per mask pixel
    slide_mpp: tuple[float, float]  # level-0 µm per pixel (x, y), to map level-0 boxes

    @property
    def area_mm2(self) -> float:
        return float(self.mask.sum()) * (self.mpp / 1000.0) ** 2

    def contains(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Whether each level-0 point ``(x[i], y[i])`` lies on a tissue pixel (False beyond the mask)."""
        col = np.floor(np.asarray(x) * self.slide_mpp[0] / self.mpp).astype(np.int64)
        row = np.floor(np.asarray(y) * self.slide_mpp[1] / self.mpp).astype(np.int64)
        h, w = self.mask.shape
        inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
        found = np.zeros(inside.shape, bool)
        found[inside] = self.mask[row[inside], col[inside]]
        return found

    def touches(self, x0: float, y0: float, x1: float, y1: float) -> bool:
        """Whether the level-0 box ``[x0, x1) x [y0, y1)`` covers any tissue pixel."""
        sx, sy = self.slide_mpp[0] / self.mpp, self.slide_mpp[1] / self.mpp
        h, w = self.mask.shape
        c0, c1 = max(0, int(np.floor(x0 * sx))), min(w, int(np.ceil(x1 * sx)))
        r0, r1 = max(0, int(np.floor(y0 * sy))), min(h, int(np.ceil(y1 * sy)))
        return c1 > c0 and r1 > r0 and bool(self.mask[r0:r1, c0:c1].any())


def detect_tissue(slide, config: TissueConfig = TissueConfig()) -> TissueMask:
    """The tissue mask of a slide, computed on a thumbnail at ``config.mpp`` (all of it with ``config.whole``).

    Thumbnail pixels the reader could not produce count as tissue: nobody can say they are glass, so they are
    tiled, and a tile that cannot be read there either is reported as tissue not examined.
    """
    if config.whole:
        width, height = slide.size_at(config.mpp)
        return TissueMask(np.ones((height, width), bool), config.mpp, (slide.resolution.mpp_x, slide.resolution.mpp_y))
    thumbnail = slide.read_whole_checked(config.mpp)
    mask = tissue_mask_from_rgb(thumbnail.pixels, config.mpp, config)
    if thumbnail.unread is not None:
        mask |= thumbnail.unread
    return TissueMask(mask, config.mpp, (slide.resolution.mpp_x, slide.resolution.mpp_y))


def no_tissue_reason(slide, config: TissueConfig) -> str:
    """Why a slide has no tissue tile, and the way out: an image smaller than the smallest fragment the mask
    keeps (a patch, an ROI crop) can never have tissue found in it."""
    width_um = slide.dimensions[0] * slide.resolution.mpp_x
    height_um = slide.dimensions[1] * slide.resolution.mpp_y
    hint = "for an ROI crop or patch that is all tissue, pass --whole-image (tissue.whole: true)"
    if width_um * height_um < config.min_area_um2:
        return (f"no tissue found: the image is {width_um:.0f} x {height_um:.0f} µm, smaller than the smallest "
                f"tissue fragment the mask keeps (tissue.min_area_um2 {config.min_area_um2:g} µm²), so nothing "
                f"was examined; {hint}")
    return f"no tissue found by the tissue mask, so nothing was examined; {hint}"


def tissue_mask_from_rgb(rgb: np.ndarray, mpp: float, config: TissueConfig = TissueConfig()) -> np.ndarray:
    """Tissue pixels of an RGB thumbnail at ``mpp`` µm/px: not glass, not black, not ink, not specks."""
    smooth = cv2.medianBlur(np.ascontiguousarray(rgb), 3)
    channels = smooth.astype(np.int16)
    r, g = channels[..., 0], channels[..., 1]
    high, low = channels.max(axis=2), channels.min(axis=2)
    chroma = high - low
    glass = (low > config.glass_brightness) & (chroma < config.min_chroma)
    grey = chroma < config.min_chroma
    black = high < config.black_level
    ink = g > r + config.pen_green_excess
    ink = cv2.dilate(ink.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    tissue = ~(glass | grey | black | ink)
    tissue = cv2.morphologyEx(tissue.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8)).astype(bool)
    tissue &= ~ink
    pixel_um2 = mpp * mpp
    tissue = _drop_small(tissue, config.min_area_um2 / pixel_um2)
    holes = _drop_small(~tissue, config.max_hole_um2 / pixel_um2, keep_border=True)
    return tissue | ~holes


def _drop_small(mask: np.ndarray, min_pixels: float, keep_border: bool = False) -> np.ndarray:
    """``mask`` without connected parts smaller than ``min_pixels`` (border-touching ones kept if asked)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_pixels
    if keep_border:
        h, w = mask.shape
        x, y = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
        bw, bh = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]
        keep |= (x == 0) | (y == 0) | (x + bw == w) | (y + bh == h)
    keep[0] = False  # label 0 is the complement
    return keep[labels]
