"""The precision-recall curve of a threshold sweep as a PNG, for people to look at.

Apart from the numbers so that computing a sweep never needs an image library: OpenCV is
imported only when a plot is drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from wsimito.errors import WsimitoError
from wsimito.outputs.atomic import atomic_path

if TYPE_CHECKING:
    from wsimito.evaluation.sweeps import Sweep


def plot_precision_recall(sweep: Sweep, path, title: str | None = None) -> Path:
    """A PNG of the precision-recall curve with the best-F1 point marked (drawn with OpenCV)."""
    import cv2

    width, height, left, right, top, bottom = 640, 560, 80, 30, 50, 70
    plot_w, plot_h = width - left - right, height - top - bottom
    image = np.full((height, width, 3), 255, np.uint8)
    black, grey, blue, red = (0, 0, 0), (210, 210, 210), (180, 90, 20), (30, 30, 220)
    font = cv2.FONT_HERSHEY_SIMPLEX

    def to_px(recall, precision):
        return int(round(left + recall * plot_w)), int(round(top + (1 - precision) * plot_h))

    for tick in np.linspace(0, 1, 6):
        x, y = to_px(tick, tick)
        cv2.line(image, (x, top), (x, top + plot_h), grey, 1)
        cv2.line(image, (left, y), (left + plot_w, y), grey, 1)
        cv2.putText(image, f"{tick:.1f}", (x - 12, top + plot_h + 20), font, 0.45, black, 1, cv2.LINE_AA)
        cv2.putText(image, f"{tick:.1f}", (left - 38, y + 5), font, 0.45, black, 1, cv2.LINE_AA)
    cv2.rectangle(image, (left, top), (left + plot_w, top + plot_h), black, 1)
    cv2.putText(image, "recall", (left + plot_w // 2 - 25, height - 20), font, 0.6, black, 1, cv2.LINE_AA)
    label = np.full((30, 100, 3), 255, np.uint8)
    cv2.putText(label, "precision", (5, 20), font, 0.6, black, 1, cv2.LINE_AA)
    rotated = cv2.rotate(label, cv2.ROTATE_90_COUNTERCLOCKWISE)
    y0 = top + plot_h // 2 - rotated.shape[0] // 2
    image[y0 : y0 + rotated.shape[0], 5 : 5 + rotated.shape[1]] = rotated
    title = title or f"precision-recall, radius {sweep.radius_um:g} um, {sweep.rule} matching"
    cv2.putText(image, title, (left, 30), font, 0.55, black, 1, cv2.LINE_AA)

    precision, recall = sweep.precision, sweep.recall
    order = np.argsort(-sweep.thresholds)  # high threshold (low recall) first
    defined = order[np.isfinite(precision[order]) & np.isfinite(recall[order])]
    if len(defined):
        curve = np.array([to_px(recall[i], precision[i]) for i in defined], np.int32)
        cv2.polylines(image, [curve], False, blue, 2, cv2.LINE_AA)
    best = sweep.best
    if best is not None and np.isfinite(precision[best]) and np.isfinite(recall[best]):
        point = to_px(recall[best], precision[best])
        cv2.circle(image, point, 7, red, 2, cv2.LINE_AA)
        text = f"best F1 {sweep.f1[best]:.3f} at score >= {sweep.thresholds[best]:.4g}"
        cv2.putText(image, text, (left + 10, top + plot_h - 12), font, 0.5, red, 1, cv2.LINE_AA)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise WsimitoError(f"{path}: could not encode the precision-recall plot")
    with atomic_path(path) as tmp:
        tmp.write_bytes(encoded.tobytes())
    return path
