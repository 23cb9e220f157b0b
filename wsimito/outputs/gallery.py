"""A review picture per slide: the highest-scoring candidates as full-resolution crops with their scores.

A count is only as good as what it counts. Ten seconds with this picture tell a
pathologist whether the detections are mitoses or dark stromal nuclei and
lymphocytes, without opening QuPath. Candidates at or above the threshold (the
ones counted) have a green score, the best ones below it a grey one, so the
picture also shows what the threshold just kept out.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from wsimito.outputs.atomic import atomic_path
from wsimito.schema import DETECTION_COLUMNS

CROP_UM = 40.0  # side of each crop: a mitosis (about 10 µm) with its neighbourhood
CELL_PX = 160  # each crop is shown this big
COLUMNS = 6
LABEL_PX = 22
_COUNTED, _BELOW, _MARK = (40, 150, 40), (140, 140, 140), (230, 60, 60)


def write_gallery(path, slide, candidates: np.ndarray, threshold: float, count: int = 24) -> Path:
    """Draw the ``count`` best ``candidates`` (level-0 rows, see schema) of the open ``slide`` into ``path``."""
    table = np.asarray(candidates, np.float64).reshape(-1, len(DETECTION_COLUMNS))
    best = table[np.argsort(-table[:, 2], kind="stable")[:count]]
    rows = max(1, -(-len(best) // COLUMNS))
    sheet = np.full((rows * (CELL_PX + LABEL_PX), COLUMNS * CELL_PX, 3), 255, np.uint8)
    side_px = CROP_UM / slide.mpp
    for index, (x, y, score, *_) in enumerate(best):
        # checked: a crop touching a damaged tile shows white there, as the networks saw it
        crop = slide.read_region_checked(x + 0.5 - side_px / 2, y + 0.5 - side_px / 2, CELL_PX, CELL_PX,
                                         CROP_UM / CELL_PX).pixels
        crop = np.ascontiguousarray(crop)
        centre, radius = CELL_PX // 2, int(round(8.0 / (CROP_UM / CELL_PX)))  # the 8 µm evaluation radius
        cv2.circle(crop, (centre, centre), radius, _MARK, 1, cv2.LINE_AA)
        top, left = (index // COLUMNS) * (CELL_PX + LABEL_PX), (index % COLUMNS) * CELL_PX
        sheet[top : top + CELL_PX, left : left + CELL_PX] = crop
        colour = _COUNTED if score >= threshold else _BELOW
        cv2.putText(sheet, f"{index + 1}. {score:.2f}", (left + 4, top + CELL_PX + 16), cv2.FONT_HERSHEY_SIMPLEX,
                    0.5, colour, 1, cv2.LINE_AA)
    if not len(best):
        cv2.putText(sheet, "no candidates", (8, CELL_PX // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.6, _BELOW, 1, cv2.LINE_AA)
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))[1].tobytes())
    return path
