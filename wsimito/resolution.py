"""Find a slide's pixel size (µm per pixel) and say where it came from.

Resolution metadata is often missing or wrong (72 dpi written by an image
library is 352.8 µm/px, not a microscope). A number is used only when it is
plausible for a microscope; otherwise the user must pass ``--mpp``. wsimito
never guesses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from wsimito.errors import SlideError

# Plausible level-0 pixel sizes of a microscope scan: 100x oil (~0.05) to a 1x overview (~10).
PLAUSIBLE_MPP = (0.02, 20.0)
_UM_PER_UNIT = {"centimeter": 1e4, "inch": 25400.0, "millimeter": 1e3, "micrometer": 1.0}


@dataclass(frozen=True)
class Resolution:
    mpp_x: float
    mpp_y: float
    source: str  # e.g. "aperio ImageDescription (openslide.mpp-x/y)", "--mpp"

    @property
    def mpp(self) -> float:
        return (self.mpp_x + self.mpp_y) / 2


def resolve_mpp(path: Path, reader_mpp, vendor: str, reader: str, override=None, image_info=None) -> Resolution:
    """The first of: ``--mpp``, the reader's mpp properties, TIFF resolution tags, image DPI.

    A candidate that is not a plausible microscope resolution is skipped, and
    if nothing is left the error lists what was found and why it was rejected.
    """
    if override is not None:
        return Resolution(float(override), float(override), "--mpp")
    rejected, seen = [], set()
    for mpp_x, mpp_y, source in _candidates(path, reader_mpp, vendor, reader, image_info or {}):
        if (round(mpp_x, 6), round(mpp_y, 6)) in seen:
            continue  # the reader already reported these TIFF tags
        seen.add((round(mpp_x, 6), round(mpp_y, 6)))
        problem = _implausible(mpp_x, mpp_y)
        if problem is None:
            return Resolution(mpp_x, mpp_y, source)
        rejected.append(f"{source} gives {problem}")
    found = "; ".join(rejected) if rejected else "the file records no pixel size"
    raise SlideError(path, f"unknown resolution: {found}. Pass --mpp (µm per pixel, e.g. --mpp 0.25 for 40x)")


def _candidates(path: Path, reader_mpp, vendor: str, reader: str, image_info: dict):
    mpp_x, mpp_y = (_to_float(v) for v in reader_mpp)
    if mpp_x and mpp_y:
        if vendor == "generic-tiff":
            what = "TIFF resolution tags"
        elif vendor == "aperio":
            what = "Aperio ImageDescription MPP"
        else:
            what = f"{vendor} metadata"
        yield mpp_x, mpp_y, f"{what} ({reader}.mpp-x/y)"
    if is_tiff(path):
        tags = _tiff_resolution(path)
        if tags is not None:
            yield tags
    dpi = image_info.get("dpi")
    if dpi and not is_tiff(path):
        try:
            dx, dy = (float(v) for v in dpi)
            if dx > 0 and dy > 0:
                yield 25400.0 / dx, 25400.0 / dy, "image DPI field"
        except (TypeError, ValueError):
            pass


def _tiff_resolution(path: Path):
    """mpp from the first page's XResolution/YResolution and ResolutionUnit, if set."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            tags = tif.pages[0].tags
            x_res, y_res = tags.get("XResolution"), tags.get("YResolution")
            unit_tag = tags.get("ResolutionUnit")
            if x_res is None or y_res is None or unit_tag is None:
                return None
            unit = getattr(unit_tag.value, "name", str(unit_tag.value)).lower()
            um = _UM_PER_UNIT.get(unit)
            px_x, px_y = _ratio(x_res.value), _ratio(y_res.value)
            if um is None or not px_x or not px_y:
                return None
            return um / px_x, um / px_y, f"TIFF resolution tags ({unit})"
    except Exception:
        return None


def _implausible(mpp_x: float, mpp_y: float):
    """Why this pixel size cannot be a microscope's, or None if it can."""
    low, high = PLAUSIBLE_MPP
    for value in (mpp_x, mpp_y):
        if not (math.isfinite(value) and low <= value <= high):
            dpi = 25400.0 / value if value > 0 else float("nan")
            return f"{value:.4g} µm/px ({dpi:.0f} dpi), not a microscope resolution"
    if abs(mpp_x - mpp_y) > 0.05 * max(mpp_x, mpp_y):
        return f"non-square pixels {mpp_x:.4g} x {mpp_y:.4g} µm"
    return None


def _ratio(value):
    if isinstance(value, tuple) and len(value) == 2:
        return value[0] / value[1] if value[1] else None
    return _to_float(value)


def _to_float(value):
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def is_tiff(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
