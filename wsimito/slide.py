"""Open any slide or image and read it at a physical resolution.

Everything downstream works in micrometres, so the one thing a slide must
give is its pixel size (mpp, µm per pixel) and where that number came from.
Readers are tried in order: OpenSlide (SVS, NDPI, MRXS, DICOM, generic tiled
TIFF, ...), tiffslide (TIFFs OpenSlide rejects), then plain images (JPEG,
PNG, BMP, untiled TIFF: MITOS, AMIDA and TUPAC fields come like this).

Coordinates are level-0 pixels of the frame QuPath shows: where OpenSlide
reports a bounds rectangle (MRXS, some NDPI) the frame starts at its corner,
so ``(0, 0)`` here is ``(bounds-x, bounds-y)`` in OpenSlide's own coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsimito.errors import SlideError
from wsimito.resample import resample_axis
from wsimito.resolution import Resolution, is_tiff, resolve_mpp

# Source pixels a single read may decode; bigger requests are split into blocks.
_MAX_BLOCK_SOURCE_PX = 4096
# A plain image is decoded whole; past this it must be converted to a tiled pyramid.
_MAX_PLAIN_IMAGE_PX = 40_000 * 40_000


@dataclass(frozen=True)
class LevelRead:
    """Pixels of one pyramid level and the level coordinate of their top-left corner."""

    pixels: np.ndarray  # H x W x 3 uint8 RGB, white where the slide has no data
    origin_x: float
    origin_y: float


class _OpenSlideLikeReader:
    """OpenSlide or tiffslide (same API): a pyramid of levels read by level-0 location."""

    def __init__(self, handle, name: str, prefix: str):
        self.handle = handle
        self.name = name
        props = dict(handle.properties)
        self.properties = {k: str(v) for k, v in props.items() if v is not None}
        # tiffslide names no vendor for a plain tiled TIFF; OpenSlide calls that generic-tiff.
        self.vendor = self.properties.get(f"{prefix}.vendor") or "generic-tiff"
        self.level_dimensions = tuple(tuple(int(v) for v in d) for d in handle.level_dimensions)
        self.level_downsamples = tuple(float(d) for d in handle.level_downsamples)
        self.offset = (
            int(float(self.properties.get(f"{prefix}.bounds-x", 0) or 0)),
            int(float(self.properties.get(f"{prefix}.bounds-y", 0) or 0)),
        )
        width = self.properties.get(f"{prefix}.bounds-width")
        height = self.properties.get(f"{prefix}.bounds-height")
        if width and height and int(float(width)) > 0 and int(float(height)) > 0:
            self.frame_size = (int(float(width)), int(float(height)))
        else:
            self.frame_size = self.level_dimensions[0]
        self.mpp_properties = (
            self.properties.get(f"{prefix}.mpp-x"),
            self.properties.get(f"{prefix}.mpp-y"),
        )

    def read(self, level: int, x: int, y: int, width: int, height: int) -> LevelRead:
        """Read a level box given in level pixels of the frame; white outside the slide."""
        ds = self.level_downsamples[level]
        canvas = np.full((height, width, 3), 255, np.uint8)
        # Clamp to the stored level: tiffslide fills outside with black, OpenSlide with transparency.
        level_w, level_h = self.level_dimensions[level]
        off_x, off_y = self.offset[0] / ds, self.offset[1] / ds
        x0 = max(0, int(math.ceil(-x - off_x)))
        y0 = max(0, int(math.ceil(-y - off_y)))
        x1 = min(width, int(math.floor(level_w - off_x - x)))
        y1 = min(height, int(math.floor(level_h - off_y - y)))
        shift_x = shift_y = 0.0
        if x1 > x0 and y1 > y0:
            # ceil: tiffslide truncates location / ds, so this lands on the wanted level pixel;
            # OpenSlide paints from exactly location / ds, at most 1/ds level pixel further on.
            loc_x = int(math.ceil((x + x0) * ds + self.offset[0] - 1e-6))
            loc_y = int(math.ceil((y + y0) * ds + self.offset[1] - 1e-6))
            image = self.handle.read_region((loc_x, loc_y), level, (x1 - x0, y1 - y0))
            canvas[y0:y1, x0:x1] = _to_rgb_on_white(np.asarray(image))
            if self.name == "openslide":
                shift_x = (loc_x - self.offset[0]) / ds - (x + x0)
                shift_y = (loc_y - self.offset[1]) / ds - (y + y0)
        return LevelRead(canvas, x + shift_x, y + shift_y)

    def close(self) -> None:
        self.handle.close()


class _PlainImageReader:
    """A single-level image decoded into memory (JPEG, PNG, BMP, untiled TIFF)."""

    name = "image"

    def __init__(self, path: Path):
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = _MAX_PLAIN_IMAGE_PX
        with Image.open(path) as image:
            self.vendor = (image.format or "image").lower()
            self.info = dict(image.info)
            self.pixels = _to_rgb_on_white(np.asarray(_pil_to_8bit(image)))
        h, w = self.pixels.shape[:2]
        self.level_dimensions = ((w, h),)
        self.level_downsamples = (1.0,)
        self.offset = (0, 0)
        self.frame_size = (w, h)
        self.properties = {}
        self.mpp_properties = (None, None)

    def read(self, level: int, x: int, y: int, width: int, height: int) -> LevelRead:
        canvas = np.full((height, width, 3), 255, np.uint8)
        h, w = self.pixels.shape[:2]
        x0, y0 = max(0, -x), max(0, -y)
        x1, y1 = min(width, w - x), min(height, h - y)
        if x1 > x0 and y1 > y0:
            canvas[y0:y1, x0:x1] = self.pixels[y + y0 : y + y1, x + x0 : x + x1]
        return LevelRead(canvas, float(x), float(y))

    def close(self) -> None:
        self.pixels = None


class Slide:
    """A slide or image with a known pixel size, read in level-0 frame coordinates.

    Use :func:`open_slide`; it picks the reader and resolves the mpp.
    """

    def __init__(self, path: Path, reader, resolution: Resolution):
        self.path = path
        self._reader = reader
        self.resolution = resolution

    # --- description -------------------------------------------------------------------
    @property
    def reader(self) -> str:
        """Which library reads the pixels: ``openslide``, ``tiffslide`` or ``image``."""
        return self._reader.name

    @property
    def vendor(self) -> str:
        """The format as its reader names it (``aperio``, ``generic-tiff``, ``jpeg``, ...)."""
        return self._reader.vendor

    @property
    def dimensions(self) -> tuple[int, int]:
        """(width, height) of the level-0 frame."""
        return self._reader.frame_size

    @property
    def offset(self) -> tuple[int, int]:
        """Where the frame starts in the reader's own level-0 coordinates (OpenSlide bounds)."""
        return self._reader.offset

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return self._reader.level_dimensions

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return self._reader.level_downsamples

    @property
    def properties(self) -> dict[str, str]:
        return self._reader.properties

    @property
    def mpp(self) -> float:
        """Level-0 µm per pixel (mean of x and y)."""
        return self.resolution.mpp

    @property
    def mpp_source(self) -> str:
        return self.resolution.source

    # --- reading -----------------------------------------------------------------------
    def best_level(self, mpp: float) -> int:
        """The coarsest level still at least as fine as ``mpp`` (never upsample if avoidable)."""
        factor = mpp / max(self.resolution.mpp_x, self.resolution.mpp_y)
        best = 0
        for level, ds in enumerate(self.level_downsamples):
            if ds <= factor * (1 + 1e-3) and ds >= self.level_downsamples[best]:
                best = level
        return best

    def read_region(self, x: float, y: float, width: int, height: int, mpp: float) -> np.ndarray:
        """``height x width`` RGB pixels at ``mpp`` µm/px, top-left at level-0 frame point ``(x, y)``.

        Read from the best pyramid level and resampled exactly: each output
        pixel is the area average of the level pixels its footprint covers
        (bilinear where the level is coarser than ``mpp``), so the result
        matches a level-0 read resized to the same grid. White outside the slide.
        """
        if width <= 0 or height <= 0:
            raise ValueError(f"region size must be positive, got {width}x{height}")
        if not mpp > 0:
            raise ValueError(f"target mpp must be positive, got {mpp}")
        level = self.best_level(mpp)
        ds = self.level_downsamples[level]
        step_x = mpp / self.resolution.mpp_x / ds  # level pixels per output pixel
        step_y = mpp / self.resolution.mpp_y / ds
        # Level box covering every footprint, one pixel of margin for bilinear taps.
        lx0, ly0 = int(math.floor(x / ds)) - 1, int(math.floor(y / ds)) - 1
        lw = int(math.ceil(x / ds + width * step_x)) + 2 - lx0
        lh = int(math.ceil(y / ds + height * step_y)) + 2 - ly0
        if lw * lh > 4 * _MAX_BLOCK_SOURCE_PX**2:
            return self._read_in_blocks(x, y, width, height, mpp)
        read = self._read_level(level, lx0, ly0, lw, lh)
        rows = resample_axis(read.pixels, y / ds - read.origin_y, step_y, height, axis=0)
        return np.rint(resample_axis(rows, x / ds - read.origin_x, step_x, width, axis=1)).astype(np.uint8)

    def read_whole(self, mpp: float) -> np.ndarray:
        """The whole frame at ``mpp`` (a thumbnail), read in blocks of bounded size."""
        width, height = self.size_at(mpp)
        return self._read_in_blocks(0.0, 0.0, width, height, mpp)

    def size_at(self, mpp: float) -> tuple[int, int]:
        """(width, height) of the frame in pixels at ``mpp``."""
        w, h = self.dimensions
        return (
            max(1, int(round(w * self.resolution.mpp_x / mpp))),
            max(1, int(round(h * self.resolution.mpp_y / mpp))),
        )

    def _read_in_blocks(self, x: float, y: float, width: int, height: int, mpp: float) -> np.ndarray:
        fx = mpp / self.resolution.mpp_x
        fy = mpp / self.resolution.mpp_y
        ds = self.level_downsamples[self.best_level(mpp)]
        block = max(16, int(_MAX_BLOCK_SOURCE_PX / max(fx / ds, fy / ds)))
        out = np.empty((height, width, 3), np.uint8)
        for top in range(0, height, block):
            for left in range(0, width, block):
                bw, bh = min(block, width - left), min(block, height - top)
                out[top : top + bh, left : left + bw] = self.read_region(
                    x + left * fx, y + top * fy, bw, bh, mpp
                )
        return out

    def _read_level(self, level: int, x: int, y: int, width: int, height: int) -> LevelRead:
        try:
            return self._reader.read(level, x, y, width, height)
        except SlideError:
            raise
        except Exception as exc:  # decoder errors from OpenSlide, tifffile, imagecodecs
            raise SlideError(self.path, f"cannot read pixels ({_describe(exc)})") from exc

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> "Slide":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        w, h = self.dimensions
        return f"Slide({str(self.path)!r}, {self.reader}/{self.vendor}, {w}x{h}, {self.mpp:.4g} µm/px)"


READERS = ("auto", "openslide", "tiffslide", "image")


def open_slide(path, mpp: float | None = None, reader: str = "auto") -> Slide:
    """Open a slide or plain image; ``mpp`` overrides whatever the file says.

    ``reader`` forces one library (``openslide``, ``tiffslide``, ``image``)
    instead of the first that works, e.g. to compare them or avoid a reader's bug.

    Raises :class:`SlideError` naming the file when it is missing, is not a
    slide or image, cannot be decoded, or has no usable mpp and none is given.
    """
    path = Path(path)
    if not path.exists():
        raise SlideError(path, "file not found")
    if path.is_dir():
        raise SlideError(path, "is a directory, not a slide file (MRXS: give the .mrxs file)")
    if mpp is not None and not (math.isfinite(mpp) and mpp > 0):
        raise SlideError(path, f"--mpp must be a positive number of µm per pixel, got {mpp}")
    if reader not in READERS:
        raise SlideError(path, f"unknown reader {reader!r} (choose from {', '.join(READERS)})")
    handle = _open_reader(path, reader)
    try:
        resolution = resolve_mpp(
            path, handle.mpp_properties, handle.vendor, handle.name, mpp, getattr(handle, "info", None)
        )
    except BaseException:
        handle.close()
        raise
    return Slide(path, handle, resolution)


def _open_reader(path: Path, only: str):
    """The first reader that opens the file and decodes its pixels; all their complaints if none does."""
    reasons = []
    for name, make in _reader_factories(path, only):
        try:
            reader = make()
        except Exception as exc:
            reasons.append(f"{name}: {_describe(exc)}")
            continue
        try:
            _probe(reader)
            return reader
        except Exception as exc:
            reader.close()
            reasons.append(f"{name}: cannot decode pixels: {_describe(exc)}")
    raise SlideError(path, "not a slide or image wsimito can read (" + "; ".join(reasons) + ")")


def _reader_factories(path: Path, only: str):
    """OpenSlide when it knows the format; then tiffslide for TIFFs, or an image decoder for the rest."""
    import openslide
    import tiffslide

    if only in ("auto", "openslide"):
        if openslide.OpenSlide.detect_format(str(path)) is not None:
            yield "openslide", lambda: _OpenSlideLikeReader(openslide.OpenSlide(str(path)), "openslide", "openslide")
        else:
            yield "openslide", _not_known_to_openslide
    if only == "tiffslide" or (only == "auto" and is_tiff(path)):
        yield "tiffslide", lambda: _OpenSlideLikeReader(tiffslide.TiffSlide(str(path)), "tiffslide", "tiffslide")
    if only == "image" or (only == "auto" and not is_tiff(path)):
        yield "image", lambda: _PlainImageReader(path)


def _not_known_to_openslide():
    raise ValueError("not a format it knows")


def _probe(reader) -> None:
    """Decode a little of the smallest level now, so a corrupt file fails at open, not mid-run."""
    level = len(reader.level_downsamples) - 1
    w, h = reader.level_dimensions[level]
    reader.read(level, max(0, w // 2 - 8), max(0, h // 2 - 8), min(16, w), min(16, h))


def _pil_to_8bit(image):
    """Bring any PIL mode to 8-bit RGB or RGBA (16-bit and grayscale fields included)."""
    if image.mode in ("RGB", "RGBA"):
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = max(float(array.max()), 1.0)
        scale = 255.0 / (65535.0 if top > 255 else 255.0)
        from PIL import Image

        return Image.fromarray(np.clip(array * scale, 0, 255).astype(np.uint8)).convert("RGB")
    return image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")


def _to_rgb_on_white(array: np.ndarray) -> np.ndarray:
    """RGB uint8; transparent pixels (no tissue scanned) become white glass."""
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.shape[2] == 4:
        rgb = array[:, :, :3].astype(np.uint16)
        alpha = array[:, :, 3:4].astype(np.uint16)
        if np.all(alpha == 255):
            return np.ascontiguousarray(array[:, :, :3])
        return ((rgb * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
    return np.ascontiguousarray(array[:, :, :3])


def _describe(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]
