"""Box geometry, the one home for it: IoU, overlap, non-maximum suppression, regression coding, warping.

Boxes are float arrays (N, 4) of ``x0, y0, x1, y1`` pixel edges. Proposals,
the R-CNN, label boxes and evaluation all share these, so a box means the same
thing everywhere.
"""

from __future__ import annotations

import cv2
import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes ``a`` (N, 4) and ``b`` (M, 4) -> (N, M)."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def box_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection over the smaller box's area of ``a`` (N, 4) and ``b`` (M, 4) -> (N, M):
    1 when one box lies inside the other, as a piece of a figure lies inside the whole figure's box."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    smaller = np.minimum(area_a[:, None], area_b[None, :])
    return np.where(smaller > 0, ix * iy / np.where(smaller > 0, smaller, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, contained: float | None = None) -> np.ndarray:
    """Indices of boxes kept by greedy non-maximum suppression, highest score first.

    A box is suppressed when its IoU with a kept box exceeds ``iou_threshold`` (Girshick's rule) or, with
    ``contained``, when more than that share of it (or of the kept box) lies inside the kept box: the
    piece of a figure (one chromosome set of an anaphase) that a better box around the whole figure
    contains has a small IoU with it but is the same mitosis.
    """
    order = np.argsort(-np.asarray(scores), kind="stable")
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    keep = []
    while order.size:
        best = order[0]
        keep.append(best)
        if order.size == 1:
            break
        rest = order[1:]
        suppressed = box_iou(boxes[best], boxes[rest])[0] > iou_threshold
        if contained is not None:
            suppressed |= box_overlap(boxes[best], boxes[rest])[0] > contained
        order = rest[~suppressed]
    return np.asarray(keep, dtype=np.intp)


def warp_regions(rgb: np.ndarray, boxes: np.ndarray, size: int, context: int) -> np.ndarray:
    """(N, size, size, 3) uint8: each box stretched to ``size - 2*context`` px with context around it."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    inner = size - 2 * context
    scale_x = np.maximum(boxes[:, 2] - boxes[:, 0], 1.0) / inner  # input px per output px
    scale_y = np.maximum(boxes[:, 3] - boxes[:, 1], 1.0) / inner
    return _sample(rgb, boxes[:, 0] - context * scale_x, boxes[:, 1] - context * scale_y, scale_x, scale_y, size)


def window_regions(rgb: np.ndarray, boxes: np.ndarray, size: int, window: int) -> np.ndarray:
    """(N, size, size, 3) uint8: a ``window`` px square centred on each box, resized to ``size`` px.

    Unlike ``warp_regions`` every region keeps the image's scale and the object's shape: a long thin stromal
    nucleus stays long and thin, a lymphocyte stays small, where a warp stretches both to fill the square.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scale = np.full(len(boxes), window / size)
    left = (boxes[:, 0] + boxes[:, 2]) / 2 - window / 2
    top = (boxes[:, 1] + boxes[:, 3]) / 2 - window / 2
    return _sample(rgb, left, top, scale, scale, size)


def _sample(rgb, left, top, scale_x, scale_y, size: int) -> np.ndarray:
    """Squares of ``size`` px whose pixel (0, 0) starts at image point (left, top), ``scale`` input px per output
    px; white outside the image."""
    out = np.empty((len(left), size, size, 3), np.uint8)
    for i, (x0, y0, sx, sy) in enumerate(zip(left, top, scale_x, scale_y)):
        matrix = np.array([[sx, 0, x0 + 0.5 * sx - 0.5], [0, sy, y0 + 0.5 * sy - 0.5]])
        out[i] = cv2.warpAffine(rgb, matrix, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=(255, 255, 255))
    return out


def encode_boxes(proposals: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Girshick's regression targets (tx, ty, tw, th) from proposals to target boxes."""
    pw, ph = proposals[:, 2] - proposals[:, 0], proposals[:, 3] - proposals[:, 1]
    px, py = proposals[:, 0] + pw / 2, proposals[:, 1] + ph / 2
    gw, gh = targets[:, 2] - targets[:, 0], targets[:, 3] - targets[:, 1]
    gx, gy = targets[:, 0] + gw / 2, targets[:, 1] + gh / 2
    return np.column_stack([(gx - px) / pw, (gy - py) / ph, np.log(gw / pw), np.log(gh / ph)])


def decode_boxes(proposals: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    pw, ph = proposals[:, 2] - proposals[:, 0], proposals[:, 3] - proposals[:, 1]
    px, py = proposals[:, 0] + pw / 2, proposals[:, 1] + ph / 2
    cx, cy = px + pw * deltas[:, 0], py + ph * deltas[:, 1]
    w, h = pw * np.exp(np.clip(deltas[:, 2], -1, 1)), ph * np.exp(np.clip(deltas[:, 3], -1, 1))
    return np.column_stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
