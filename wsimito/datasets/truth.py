"""Ground-truth mitosis positions from the formats public data sets use, as one kind of value.

Every reader returns ``{image: (N, 2) float array of (x, y)}`` in pixels of that image (x = column,
y = row), so evaluation never needs to know where the labels came from. ``read_truth`` tells the
format from the path itself:

============================================  ==========================================================
path                                          format, and the image key it gives
============================================  ==========================================================
``*.csv`` with an ``image,x,y`` header        centroid CSV (mitos2012-icpr, ``wsimito synth``); key = the
                                              ``image`` column without extension
``*.csv`` of numbers, 2 per line              AMIDA13 / TUPAC16 per-image CSV, ``row,col`` (= y, x); key =
                                              file stem
``*.csv`` of numbers, more per line           MITOS 2012 pixel list: one mitosis per line, ``x1,y1,x2,...``;
                                              the point is the centroid of its pixels; key = file stem
``*.json`` with ``images`` and ``annotations``  MIDOG / MIDOG++ (COCO-like, bbox ``[x1, y1, x2, y2]``): the box
                                              centres of the "mitotic figure" category; key = ``file_name``
                                              stem
``*.json`` / ``*.geojson`` FeatureCollection  GeoJSON (QuPath): one mitosis per Point, or per Polygon at its
                                              centroid; key = file stem
``*.txt`` of ``<frame path> x y`` lines       MITOS-ATYPIA-14 centroid list; key = the frame name (last part
                                              of the path, e.g. ``A18_06Ca``)
a folder                                      every ``*.csv`` and ``*.geojson`` below it, read as above; a
                                              per-image file's key is its path relative to the folder
                                              without extension, ``/``-separated (TUPAC16:
                                              ``mitoses_ground_truth/`` gives ``01/01``, ``01/02``, ...,
                                              because image names repeat across cases)
============================================  ==========================================================

Which images the truth covers matters as much as its points: an image listed with no points has
no mitoses. Per-image files always list their image (an empty file = no mitoses). MIDOG json keeps
the images with at least one annotation of any category: its unlabelled images (MIDOG 2021's
151-200) have none and are left out rather than read as "no mitoses". Centroid CSVs, GeoJSON and
the ATYPIA list only name images that have points.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from wsimito.datasets.pixel_lists import pixel_list_centroids, read_pixel_lists
from wsimito.datasets.points import read_centroid_csv
from wsimito.errors import WsimitoError

Truth = dict[str, np.ndarray]
_PER_IMAGE_SUFFIXES = (".csv", ".geojson")


def read_truth(path) -> Truth:
    """Truth points from a file or folder in any supported format (see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        return read_truth_folder(path)
    if not path.exists():
        raise WsimitoError(f"{path}: truth file or folder not found")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path, path.stem)
    if suffix in (".json", ".geojson"):
        data = _load_json(path)
        if isinstance(data, dict) and "images" in data and "annotations" in data:
            return read_midog_json(path, data)
        if _is_geojson(data):
            return {path.stem: geojson_points(data, path)}
        raise WsimitoError(f"{path}: JSON is neither MIDOG/COCO (images, annotations) nor a GeoJSON FeatureCollection")
    if suffix == ".txt":
        return read_atypia_centroids(path)
    raise WsimitoError(
        f"{path}: cannot tell the truth format (expected .csv, .json, .geojson, .txt or a folder of per-image files)"
    )


def read_truth_folder(folder) -> Truth:
    """Every per-image ``*.csv`` / ``*.geojson`` below ``folder``; keys are paths relative to it (see module)."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in _PER_IMAGE_SUFFIXES and p.is_file()
                   and not p.name.startswith("."))
    if not files:
        raise WsimitoError(f"{folder}: no truth files (*.csv, *.geojson) in this folder")
    truth: Truth = {}
    for file in files:
        key = file.relative_to(folder).with_suffix("").as_posix()
        found = {key: geojson_points(_load_json(file), file)} if file.suffix.lower() == ".geojson" \
            else _read_csv(file, key)
        for image, points in found.items():
            if image in truth:
                raise WsimitoError(f"{file}: image {image} already has truth from another file in {folder}")
            truth[image] = points
    return truth


def _read_csv(path: Path, key: str) -> Truth:
    """A centroid CSV (it has a header) or one image's numeric CSV (TUPAC row,col or a MITOS pixel list)."""
    rows = _numeric_rows(path)
    if rows is None:
        return read_centroid_csv(path)
    if all(len(row) == 2 for row in rows):
        return {key: read_row_col_csv(path, rows)}
    return {key: pixel_list_centroids(read_pixel_lists(path))}


def _numeric_rows(path: Path) -> list[list[str]] | None:
    """The non-empty lines split on commas, or None when the first line is a header (not numbers)."""
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise WsimitoError(f"{path}: not a text CSV file") from None
    rows = [[f.strip() for f in line.replace(";", ",").split(",") if f.strip()] for line in text.splitlines()]
    rows = [row for row in rows if row]
    if rows and not all(_is_number(f) for f in rows[0]):
        return None
    return rows


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def read_row_col_csv(path, rows: list[list[str]] | None = None) -> np.ndarray:
    """(N, 2) (x, y) from an AMIDA13 / TUPAC16 CSV: one mitosis per line, ``row,col`` (y, x), no header."""
    path = Path(path)
    rows = _numeric_rows(path) if rows is None else rows
    points = []
    for number, row in enumerate(rows or [], start=1):
        if len(row) != 2 or not all(_is_number(f) for f in row):
            raise WsimitoError(f"{path}: mitosis {number} is not a row,col pair of numbers: {','.join(row)}")
        points.append((float(row[1]), float(row[0])))
    return np.array(points, dtype=np.float64).reshape(-1, 2)


def read_midog_json(path, data: dict | None = None) -> Truth:
    """Box centres of the "mitotic figure" category (id 1 if no category has that name) per image stem."""
    path = Path(path)
    data = _load_json(path) if data is None else data
    try:
        names = {c["id"]: str(c.get("name", "")).lower() for c in data.get("categories", [])}
        mitotic = [i for i, name in names.items() if name == "mitotic figure"] or [1]
        images = {image["id"]: Path(image["file_name"]).stem for image in data["images"]}
        truth: dict[str, list] = {}
        for number, annotation in enumerate(data["annotations"]):
            image = annotation["image_id"]
            if image not in images:
                raise WsimitoError(f"{path}: annotation {number} refers to image id {image}, not in images")
            points = truth.setdefault(images[image], [])
            if annotation["category_id"] in mitotic:
                x1, y1, x2, y2 = map(float, annotation["bbox"])
                points.append(((x1 + x2) / 2, (y1 + y2) / 2))
    except (KeyError, TypeError, ValueError) as exc:
        raise WsimitoError(f"{path}: not a MIDOG/COCO annotation file ({type(exc).__name__}: {exc})") from None
    return {image: np.array(points, dtype=np.float64).reshape(-1, 2) for image, points in truth.items()}


def read_atypia_centroids(path) -> Truth:
    """MITOS-ATYPIA-14 centroid list: ``<frame path> x y`` per line; key = the frame name."""
    path = Path(path)
    truth: dict[str, list] = {}
    frames: dict[str, str] = {}
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise WsimitoError(f"{path}: not a text file") from None
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 3 or not (_is_number(fields[1]) and _is_number(fields[2])):
            raise WsimitoError(f"{path}: line {number} is not '<frame path> x y': {line.strip()}")
        frame = fields[0].replace("\\", "/").rstrip("/")
        name = Path(frame).stem
        if frames.setdefault(name, frame) != frame:
            raise WsimitoError(f"{path}: line {number}: frame name {name} also belongs to {frames[name]}")
        truth.setdefault(name, []).append((float(fields[1]), float(fields[2])))
    return {name: np.array(points, dtype=np.float64) for name, points in truth.items()}


def _is_geojson(data) -> bool:
    if isinstance(data, dict):
        return data.get("type") in ("FeatureCollection", "Feature")
    return isinstance(data, list) and all(isinstance(f, dict) and f.get("type") == "Feature" for f in data)


def geojson_points(data, source) -> np.ndarray:
    """(N, 2) (x, y): one point per feature; a Polygon or MultiPolygon gives its area centroid.

    Accepts a FeatureCollection, a single Feature, or a list of Features (QuPath writes either).
    MultiPoint gives each of its points. Every feature counts: pass a file of mitoses only.
    """
    if not _is_geojson(data):
        raise WsimitoError(f"{source}: not a GeoJSON FeatureCollection")
    if isinstance(data, list):
        features = data
    elif data["type"] == "FeatureCollection":
        features = data.get("features") or []
    else:
        features = [data]
    points = []
    for number, feature in enumerate(features):
        geometry = (feature or {}).get("geometry") or {}
        kind, coordinates = geometry.get("type"), geometry.get("coordinates")
        try:
            if kind == "Point":
                points.append((float(coordinates[0]), float(coordinates[1])))
            elif kind == "MultiPoint":
                points.extend((float(c[0]), float(c[1])) for c in coordinates)
            elif kind == "Polygon":
                points.append(_polygons_centroid([coordinates]))
            elif kind == "MultiPolygon":
                points.append(_polygons_centroid(coordinates))
            else:
                raise WsimitoError(f"{source}: feature {number} has geometry {kind!r}; expected Point or Polygon")
        except (TypeError, ValueError, IndexError):
            raise WsimitoError(f"{source}: feature {number} has malformed {kind} coordinates") from None
    return np.array(points, dtype=np.float64).reshape(-1, 2)


def _polygons_centroid(polygons) -> tuple[float, float]:
    """Area-weighted centroid of the outer rings (holes ignored: a mitosis outline has none)."""
    weight, cx, cy = 0.0, 0.0, 0.0
    vertices = []
    for polygon in polygons:
        ring = np.asarray(polygon[0], dtype=np.float64)[:, :2]
        vertices.append(ring)
        x, y = ring[:, 0], ring[:, 1]
        x1, y1 = np.roll(x, -1), np.roll(y, -1)
        cross = x * y1 - x1 * y
        area = cross.sum() / 2  # signed: the ring's orientation does not matter below
        if abs(area) > 1e-12:
            weight += abs(area)
            cx += abs(area) * ((x + x1) * cross).sum() / (6 * area)
            cy += abs(area) * ((y + y1) * cross).sum() / (6 * area)
    if weight == 0:  # degenerate outline (a line or a point): the mean vertex
        mean = np.concatenate(vertices).mean(axis=0)
        return float(mean[0]), float(mean[1])
    return cx / weight, cy / weight


def _load_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WsimitoError(f"{path}: not valid JSON ({exc})") from None
