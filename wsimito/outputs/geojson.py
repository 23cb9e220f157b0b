"""QuPath-ready GeoJSON: detections as ``detection`` objects, the hotspot and any unread tissue as ``annotation``s.

QuPath imports a FeatureCollection whose features carry ``properties.objectType``,
``classification {name, color}`` and ``measurements``; coordinates are level-0
pixels of the image as QuPath shows it. Feature ids are UUIDs derived from the
slide and the box, so a rerun writes the same file.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np

from wsimito.outputs.atomic import atomic_path
from wsimito.schema import DETECTION_COLUMNS

MITOSIS_COLOUR = [230, 30, 60]
HOTSPOT_COLOUR = [250, 200, 0]
UNREAD_COLOUR = [90, 90, 90]
_NAMESPACE = uuid.UUID("6f1c1b8e-3f1a-4a59-9d57-0c2a4c0e5a11")


def _rectangle(x0, y0, x1, y1) -> dict:
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    return {"type": "Polygon", "coordinates": [[[round(float(x), 2), round(float(y), 2)] for x, y in ring]]}


def detection_features(slide_id: str, table: np.ndarray) -> list[dict]:
    """One Feature per row of a detection table (``DETECTION_COLUMNS``)."""
    features = []
    for _x, _y, score, x0, y0, x1, y1 in np.asarray(table).reshape(-1, len(DETECTION_COLUMNS)):
        key = f"{slide_id}:{x0:.2f}:{y0:.2f}:{x1:.2f}:{y1:.2f}"
        features.append({
            "type": "Feature",
            "id": str(uuid.uuid5(_NAMESPACE, key)),
            "geometry": _rectangle(x0, y0, x1, y1),
            "properties": {
                "objectType": "detection",
                "classification": {"name": "Mitosis", "color": MITOSIS_COLOUR},
                "measurements": {"score": round(float(score), 6)},
            },
        })
    return features


def hotspot_feature(slide_id: str, summary: dict, mpp: float) -> dict | None:
    """The hotspot window as a QuPath annotation (square or circle polygon), if there is one."""
    if summary.get("hotspot_x") is None:
        return None
    cx, cy = summary["hotspot_x"], summary["hotspot_y"]
    side_px = (summary["hotspot_mm2"] ** 0.5) * 1000 / mpp
    if summary["hotspot_shape"] == "circle":
        radius = (summary["hotspot_mm2"] / np.pi) ** 0.5 * 1000 / mpp
        angles = np.linspace(0, 2 * np.pi, 65)
        ring = [[round(float(cx + radius * np.cos(a)), 2), round(float(cy + radius * np.sin(a)), 2)] for a in angles]
        geometry = {"type": "Polygon", "coordinates": [ring]}
    else:
        geometry = _rectangle(cx - side_px / 2, cy - side_px / 2, cx + side_px / 2, cy + side_px / 2)
    return {
        "type": "Feature",
        "id": str(uuid.uuid5(_NAMESPACE, f"{slide_id}:hotspot")),
        "geometry": geometry,
        "properties": {
            "objectType": "annotation",
            "name": f"Hotspot {summary['hotspot_mm2']:g} mm²: {summary['hotspot_count']} mitoses",
            "classification": {"name": "Hotspot", "color": HOTSPOT_COLOUR},
            "measurements": {"mitoses": summary["hotspot_count"], "area_mm2": summary["hotspot_mm2"]},
        },
    }


def unread_feature(slide_id: str, boxes: list[tuple[float, float, float, float]], area_mm2: float) -> dict:
    """One "Unread" annotation over the level-0 boxes of tissue the reader could not produce (not examined)."""
    return {
        "type": "Feature",
        "id": str(uuid.uuid5(_NAMESPACE, f"{slide_id}:unread")),
        "geometry": {"type": "MultiPolygon", "coordinates": [_rectangle(*box)["coordinates"] for box in boxes]},
        "properties": {
            "objectType": "annotation",
            "name": f"Unread: {area_mm2:.4g} mm² of tissue not examined ({len(boxes)} tiles)",
            "classification": {"name": "Unread", "color": UNREAD_COLOUR},
            "measurements": {"tiles": len(boxes), "area_mm2": round(float(area_mm2), 6)},
        },
    }


def write_geojson(path, features: list[dict]) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path
