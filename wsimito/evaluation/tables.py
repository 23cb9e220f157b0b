"""The CSV tables of an evaluation: a detector's detections.csv and counts.csv in, scores out.

Evaluation reads the tables ``wsimito detect`` writes, wherever they came from, and writes its
own per-image and sweep tables; file formats and their errors stay here, out of the arithmetic.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from wsimito.errors import WsimitoError
from wsimito.evaluation.matching import Detections, Evaluation
from wsimito.evaluation.sweeps import Sweep
from wsimito.outputs.tables import write_csv_atomic

PER_IMAGE_COLUMNS = ["image", "mpp", "n_truth", "n_detections", "tp", "fp", "fn", "precision", "recall", "f1"]
SWEEP_COLUMNS = ["threshold", "tp", "fp", "fn", "precision", "recall", "f1"]


def read_detections_csv(path) -> dict[str, Detections]:
    """``{slide: Detections}`` from a ``detections.csv`` with at least the columns slide,x,y,score.

    x, y are level-0 pixels; other columns (the box x0,y0,x1,y1) are ignored.
    """
    path = Path(path)
    rows: dict[str, list] = {}
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            missing = {"slide", "x", "y", "score"} - set(reader.fieldnames or [])
            if missing:
                raise WsimitoError(f"{path}: needs columns slide,x,y,score (missing {', '.join(sorted(missing))})")
            for number, row in enumerate(reader, start=2):
                try:
                    values = float(row["x"]), float(row["y"]), float(row["score"])
                except (TypeError, ValueError):
                    raise WsimitoError(f"{path}: line {number}: x, y and score must be numbers") from None
                if not all(map(math.isfinite, values)):
                    raise WsimitoError(f"{path}: line {number}: x, y and score must be finite numbers")
                rows.setdefault(row["slide"], []).append(values)
    except FileNotFoundError:
        raise WsimitoError(f"{path}: detections file not found") from None
    except UnicodeDecodeError:
        raise WsimitoError(f"{path}: not a text CSV file") from None
    return {slide: Detections(np.array(v)[:, :2], np.array(v)[:, 2]) for slide, v in rows.items()}


def read_slide_table(path) -> dict[str, dict]:
    """``{slide: row}`` from a batch's ``counts.csv`` (columns slide, mpp and optionally status)."""
    path = Path(path)
    table = {}
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            missing = {"slide", "mpp"} - set(reader.fieldnames or [])
            if missing:
                raise WsimitoError(f"{path}: needs columns slide,mpp (missing {', '.join(sorted(missing))})")
            for row in reader:
                table[row["slide"]] = row
    except FileNotFoundError:
        raise WsimitoError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise WsimitoError(f"{path}: not a text CSV file") from None
    return table


def write_per_image_csv(evaluation: Evaluation, path) -> Path:
    """One row per image scored, in the columns of :data:`PER_IMAGE_COLUMNS` (nan where undefined)."""
    return write_csv_atomic(path, PER_IMAGE_COLUMNS, [r.as_dict() for r in evaluation.per_image])


def write_sweep_csv(sweep: Sweep, path) -> Path:
    """The sweep as CSV: threshold,tp,fp,fn,precision,recall,f1 (ascending threshold; nan where undefined)."""
    return write_csv_atomic(path, SWEEP_COLUMNS, sweep.rows())
