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
import threading
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
# A read that fails is retried in ever smaller parts, down to this side in level pixels: what is lost is then
# the damaged tile and at most this much around it.
_SALVAGE_MIN_PX = 32
# OpenSlide formats that store only what was scanned: a transparent pixel inside them is glass nobody scanned.
# In the others every tile of a level is stored, so a transparent pixel is one OpenSlide could not produce.
_SPARSE_VENDORS = frozenset({"mirax", "leica", "ventana", "philips", "dicom", "zeiss"})
_NOT_STORED = "no pixels stored there (a zero-length or missing tile)"


@dataclass(frozen=True)
class LevelRead:
    """Pixels of one pyramid level, the level coordinate of their top-left corner, and what could not be read."""

    pixels: np.ndarray  # H x W x 3 uint8 RGB, white where the slide has no data
    origin_x: float
    origin_y: float
    unread: np.ndarray | None = None  # bool H x W: inside the slide, but the reader produced no pixel (white)
    problem: str = ""  # why, in the reader's words


@dataclass(frozen=True)
class Region:
    """Pixels at a target mpp and which of them the slide should have but its reader could not produce."""

    pixels: np.ndarray  # H x W x 3 uint8 RGB
    unread: np.ndarray | None = None  # bool H x W, or None when every pixel was read
    problem: str = ""


class _OpenSlideLikeReader:
    """OpenSlide or tiffslide (same API): a pyramid of levels read by level-0 location.

    ``opener`` makes a new handle on the file: OpenSlide's errors are sticky (after one failed read every later
    read on that handle fails too), so a failed read gets a fresh handle for what follows.
    """

    def __init__(self, opener, name: str, prefix: str):
        self._open = opener
        self.handle = opener()
        self._retired = []  # handles replaced after an error, closed at the end: other threads may still use them
        self._lock = threading.Lock()
        self.name = name
        handle = self.handle
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
        # Transparency means "not read" only where the format stores every tile (OpenSlide paints it there).
        self._transparent_is_unread = name == "openslide" and self.vendor not in _SPARSE_VENDORS
        self._empty_tiles = _empty_tiles(handle) if name == "tiffslide" else None

    def read(self, level: int, x: int, y: int, width: int, height: int) -> LevelRead:
        """Read a level box given in level pixels of the frame; white outside the slide.

        Raises whatever the decoder raises on a damaged tile (``salvage`` then keeps the rest).
        """
        handle = self.handle
        try:
            return self._read_with(handle, level, x, y, width, height)
        except Exception:
            self._retire(handle)
            raise

    def salvage(self, level: int, x: int, y: int, width: int, height: int, error: Exception) -> LevelRead:
        """The box of a read that raised, again in ever smaller parts on a handle of its own.

        What decodes is kept; parts down to ``_SALVAGE_MIN_PX`` that still fail are white and marked unread, so
        one damaged tile costs that tile, not the slide. Origin: the box's corner (within a level pixel).
        """
        canvas = np.full((height, width, 3), 255, np.uint8)
        unread = np.zeros((height, width), bool)
        handle = self._open()
        boxes = _quarters(0, 0, width, height)
        try:
            while boxes:
                bx, by, bw, bh = boxes.pop()
                try:
                    part = self._read_with(handle, level, x + bx, y + by, bw, bh)
                except Exception:
                    handle.close()
                    handle = self._open()
                    if max(bw, bh) <= _SALVAGE_MIN_PX:
                        unread[by : by + bh, bx : bx + bw] = True
                    else:
                        boxes += _quarters(bx, by, bw, bh)
                    continue
                canvas[by : by + bh, bx : bx + bw] = part.pixels
                if part.unread is not None:
                    unread[by : by + bh, bx : bx + bw] |= part.unread
        finally:
            handle.close()
        x0, y0, x1, y1 = self._stored(level, x, y, width, height)
        inside = np.zeros_like(unread)
        inside[y0:y1, x0:x1] = True
        unread &= inside
        return LevelRead(canvas, float(x), float(y), unread if unread.any() else None, _describe(error))

    def _stored(self, level: int, x: int, y: int, width: int, height: int) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1): the part of a level box, in box pixels, that the stored level covers."""
        ds = self.level_downsamples[level]
        level_w, level_h = self.level_dimensions[level]
        off_x, off_y = self.offset[0] / ds, self.offset[1] / ds
        return (max(0, int(math.ceil(-x - off_x))), max(0, int(math.ceil(-y - off_y))),
                min(width, int(math.floor(level_w - off_x - x))), min(height, int(math.floor(level_h - off_y - y))))

    def _read_with(self, handle, level: int, x: int, y: int, width: int, height: int) -> LevelRead:
        ds = self.level_downsamples[level]
        canvas = np.full((height, width, 3), 255, np.uint8)
        # Clamp to the stored level: tiffslide fills outside with black, OpenSlide with transparency.
        x0, y0, x1, y1 = self._stored(level, x, y, width, height)
        shift_x = shift_y = 0.0
        unread = None
        if x1 > x0 and y1 > y0:
            # ceil: tiffslide truncates location / ds, so this lands on the wanted level pixel;
            # OpenSlide paints from exactly location / ds, at most 1/ds level pixel further on.
            loc_x = int(math.ceil((x + x0) * ds + self.offset[0] - 1e-6))
            loc_y = int(math.ceil((y + y0) * ds + self.offset[1] - 1e-6))
            array = np.asarray(handle.read_region((loc_x, loc_y), level, (x1 - x0, y1 - y0)))
            lost = self._lost(level, array, int(loc_x / ds), int(loc_y / ds))
            canvas[y0:y1, x0:x1] = _to_rgb_on_white(array)
            if lost is not None:
                canvas[y0:y1, x0:x1][lost] = 255
                unread = np.zeros((height, width), bool)
                unread[y0:y1, x0:x1] = lost
            if self.name == "openslide":
                shift_x = (loc_x - self.offset[0]) / ds - (x + x0)
                shift_y = (loc_y - self.offset[1]) / ds - (y + y0)
        return LevelRead(canvas, x + shift_x, y + shift_y, unread, _NOT_STORED if unread is not None else "")

    def _lost(self, level: int, array: np.ndarray, left: int, top: int) -> np.ndarray | None:
        """Pixels of a read the file has no data for: OpenSlide paints them transparent, tiffslide black (it
        reads a tile stored with no bytes as zeros, so those tiles are looked up in the TIFF itself)."""
        if self._transparent_is_unread and array.shape[2] == 4:
            lost = array[:, :, 3] == 0
        elif self._empty_tiles is not None and self._empty_tiles[level] is not None:
            grid, tile_h, tile_w = self._empty_tiles[level]
            rows = np.minimum((top + np.arange(array.shape[0])) // tile_h, grid.shape[0] - 1)
            cols = np.minimum((left + np.arange(array.shape[1])) // tile_w, grid.shape[1] - 1)
            lost = grid[np.ix_(rows, cols)]
        else:
            return None
        return lost if lost.any() else None

    def _retire(self, handle) -> None:
        """Give later reads a fresh handle when ``handle`` failed (OpenSlide's errors are sticky)."""
        with self._lock:
            if self.handle is handle:
                self._retired.append(handle)
                self.handle = self._open()

    def close(self) -> None:
        for handle in [self.handle, *self._retired]:
            handle.close()


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

    def salvage(self, level: int, x: int, y: int, width: int, height: int, error: Exception) -> LevelRead:
        """Nothing to salvage: the image was decoded whole at open, so a failed read here is a bug, raised."""
        raise error

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
        matches a level-0 read resized to the same grid. White outside the slide
        and where the file stores no pixels; a tile the decoder rejects raises a ``SlideError``
        (``read_region_checked`` keeps the rest and says where).
        """
        return self._region(x, y, width, height, mpp, salvage=False).pixels

    def read_region_checked(self, x: float, y: float, width: int, height: int, mpp: float) -> Region:
        """``read_region`` that goes on past damaged tiles, and says which output pixels the slide should have
        but its reader could not produce (a corrupt, zero-length or missing tile): any output pixel that one
        such level pixel touches. White there."""
        return self._region(x, y, width, height, mpp, salvage=True)

    def _region(self, x: float, y: float, width: int, height: int, mpp: float, salvage: bool) -> Region:
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
            return self._read_in_blocks(x, y, width, height, mpp, salvage)
        read = self._read_level(level, lx0, ly0, lw, lh, salvage)

        def resample(values):
            rows = resample_axis(values, y / ds - read.origin_y, step_y, height, axis=0)
            return resample_axis(rows, x / ds - read.origin_x, step_x, width, axis=1)

        pixels = np.rint(resample(read.pixels)).astype(np.uint8)
        if read.unread is None:
            return Region(pixels)
        unread = resample(read.unread.astype(np.float32)) > 1e-3  # above float crumbs of a zero weight
        return Region(pixels, unread if unread.any() else None, read.problem)

    def read_whole(self, mpp: float) -> np.ndarray:
        """The whole frame at ``mpp`` (a thumbnail), read in blocks of bounded size (as ``read_region``)."""
        width, height = self.size_at(mpp)
        return self._read_in_blocks(0.0, 0.0, width, height, mpp, salvage=False).pixels

    def read_whole_checked(self, mpp: float) -> Region:
        """``read_whole`` past damaged tiles, and which of its pixels could not be read (``read_region_checked``)."""
        width, height = self.size_at(mpp)
        return self._read_in_blocks(0.0, 0.0, width, height, mpp, salvage=True)

    def size_at(self, mpp: float) -> tuple[int, int]:
        """(width, height) of the frame in pixels at ``mpp``."""
        w, h = self.dimensions
        return (
            max(1, int(round(w * self.resolution.mpp_x / mpp))),
            max(1, int(round(h * self.resolution.mpp_y / mpp))),
        )

    def _read_in_blocks(self, x: float, y: float, width: int, height: int, mpp: float, salvage: bool) -> Region:
        fx = mpp / self.resolution.mpp_x
        fy = mpp / self.resolution.mpp_y
        ds = self.level_downsamples[self.best_level(mpp)]
        block = max(16, int(_MAX_BLOCK_SOURCE_PX / max(fx / ds, fy / ds)))
        out = np.empty((height, width, 3), np.uint8)
        unread = None
        problem = ""
        for top in range(0, height, block):
            for left in range(0, width, block):
                bw, bh = min(block, width - left), min(block, height - top)
                part = self._region(x + left * fx, y + top * fy, bw, bh, mpp, salvage)
                out[top : top + bh, left : left + bw] = part.pixels
                if part.unread is not None:
                    unread = np.zeros((height, width), bool) if unread is None else unread
                    unread[top : top + bh, left : left + bw] = part.unread
                    problem = problem or part.problem
        return Region(out, unread, problem)

    def _read_level(self, level: int, x: int, y: int, width: int, height: int, salvage: bool) -> LevelRead:
        try:
            return self._reader.read(level, x, y, width, height)
        except Exception as exc:  # decoder errors from OpenSlide, tifffile, imagecodecs
            if salvage:
                return self._reader.salvage(level, x, y, width, height, exc)
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
            yield "openslide", lambda: _OpenSlideLikeReader(lambda: openslide.OpenSlide(str(path)), "openslide",
                                                        "openslide")
        else:
            yield "openslide", _not_known_to_openslide
    if only == "tiffslide" or (only == "auto" and is_tiff(path)):
        yield "tiffslide", lambda: _OpenSlideLikeReader(lambda: tiffslide.TiffSlide(str(path)), "tiffslide",
                                                        "tiffslide")
    if only == "image" or (only == "auto" and not is_tiff(path)):
        yield "image", lambda: _PlainImageReader(path)


def _not_known_to_openslide():
    raise ValueError("not a format it knows")


def _probe(reader) -> None:
    """Decode a little of the smallest level now, so a corrupt file fails at open, not mid-run.

    Five spots (the centre and the quarters' centres): one damaged tile is the slide's to report as unread,
    not a reason to refuse the file. Raises the first failure when no spot decodes.
    """
    level = len(reader.level_downsamples) - 1
    w, h = reader.level_dimensions[level]
    first = None
    for fx, fy in ((2, 2), (1, 1), (3, 1), (1, 3), (3, 3)):
        try:
            reader.read(level, max(0, w * fx // 4 - 8), max(0, h * fy // 4 - 8), min(16, w), min(16, h))
            return
        except Exception as exc:
            first = first or exc
    raise first


def _quarters(x: int, y: int, width: int, height: int) -> list[tuple[int, int, int, int]]:
    """A box cut in half across each side longer than ``_SALVAGE_MIN_PX``: four boxes, two, or itself."""
    xs = [x, x + width // 2, x + width] if width > _SALVAGE_MIN_PX else [x, x + width]
    ys = [y, y + height // 2, y + height] if height > _SALVAGE_MIN_PX else [y, y + height]
    return [(x0, y0, x1 - x0, y1 - y0) for y0, y1 in zip(ys, ys[1:]) for x0, x1 in zip(xs, xs[1:])]


def _empty_tiles(handle) -> list:
    """Per level of a tiffslide handle: (bool grid of the TIFF tiles stored with no bytes, tile height, tile
    width), or None for a level without any (or whose layout is not one grid of chunks)."""
    series = handle.ts_tifffile.series[handle.properties["tiffslide.series-index"]]
    found = []
    for level in series.levels:
        page = level.keyframe
        counts = np.asarray(page.databytecounts)
        rows, cols = page.chunked[:2]
        if page.planarconfig != 1 or counts.size != rows * cols or counts.all():
            found.append(None)
        else:
            found.append(((counts == 0).reshape(rows, cols), page.chunks[0], page.chunks[1]))
    return found


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
