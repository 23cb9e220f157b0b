"""Shared test fixtures: the real data in ../shared/data and small pyramids made on the fly."""

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("WSIMITO_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data() -> Path:
    """The real test data; its absence is a failure, not a skip (CI lays it beside the clone)."""
    if not (DATA / "README.md").exists():
        raise RuntimeError(f"real test data not found at {DATA}; set WSIMITO_SHARED_DATA")
    return DATA


def smooth_texture(height: int, width: int, seed: int = 0, cells=(64, 16, 6)) -> np.ndarray:
    """An RGB image with random detail at the given scales (cell sizes in pixels)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((height, width, 3), np.float64)
    for cell, weight in zip(cells, (60.0, 40.0, 25.0)):
        small = rng.normal(size=(height // cell + 2, width // cell + 2, 3))
        out += weight * cv2.resize(small, (width + 2 * cell, height + 2 * cell), interpolation=cv2.INTER_CUBIC)[
            cell : cell + height, cell : cell + width
        ]
    return np.clip(out + 150, 0, 255).astype(np.uint8)


def write_pyramid(path: Path, level0: np.ndarray, mpp: float, levels: int = 3, tile: int = 128) -> Path:
    """A lossless tiled pyramidal TIFF (OpenSlide generic-tiff): each level an exact 2x box reduction."""
    px_per_cm = 1e4 / mpp
    with tifffile.TiffWriter(path) as tif:
        image = level0
        for level in range(levels):
            tif.write(
                image,
                tile=(tile, tile),
                photometric="rgb",
                compression="zlib",
                resolution=(px_per_cm, px_per_cm),
                resolutionunit="CENTIMETER",
                subfiletype=1 if level else 0,
            )
            h, w = image.shape[:2]
            image = cv2.resize(image[: h // 2 * 2, : w // 2 * 2], (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    return path
