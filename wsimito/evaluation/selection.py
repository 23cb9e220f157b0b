"""Which images an evaluation scores, and at what mpp, from a detector's output and the truth.

A detector's output folder says which slides it ran on (counts.csv, with each slide's mpp and
status) and what it found (detections.csv); the truth may cover more images, fewer, or name them
differently. Choosing the images to score, and refusing a truth that shares no name with the
slides (a naming mistake, not a score of 0), is library logic shared by every caller, not the
command line's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from wsimito.datasets.truth import read_truth
from wsimito.errors import WsimitoError
from wsimito.evaluation.matching import Detections
from wsimito.evaluation.tables import read_detections_csv, read_slide_table


class Selection(NamedTuple):
    """The images to score, their mpp (one number or ``{image: mpp}``), notes for the user, and the
    slides the detector reports on."""

    images: list[str]
    mpp: float | dict[str, float]
    notes: list[str]
    slides: list[str]


@dataclass(frozen=True)
class EvaluationInputs:
    """What :func:`wsimito.evaluation.evaluate` needs, read and chosen, with notes for the user."""

    detections: dict[str, Detections]
    truth: dict[str, np.ndarray]
    images: list[str]
    mpp: float | dict[str, float]
    notes: list[str]


def find_detections_csv(path) -> Path:
    """``path`` itself, or the detections.csv in the folder ``path``."""
    path = Path(path)
    found = path / "detections.csv" if path.is_dir() else path
    if not found.is_file():
        raise WsimitoError(f"{path}: no detections.csv in this folder")
    return found


def select_images(detections_csv: Path, detections: dict, truth: dict, mpp: float | None = None) -> Selection:
    """The images to score and their mpp, given the detections read from ``detections_csv``.

    With a counts.csv beside ``detections_csv``, the images are its slides whose status is ok
    (the others are noted), and the slides are all its rows (every slide run, detections or
    not); without one, the images are those in the detections or the truth, and the slides those
    with detections. ``mpp`` applies to every image; without it each image's mpp comes from
    counts.csv.
    """
    counts_csv = detections_csv.with_name("counts.csv")
    notes = []
    if counts_csv.is_file():
        table = read_slide_table(counts_csv)
        failed = [s for s, row in table.items() if (row.get("status") or "ok") != "ok"]
        if failed:
            notes.append(f"{len(failed)} slides with a status other than ok in {counts_csv} are not evaluated "
                         f"({_some(failed)})")
        images = sorted(s for s in table if s not in failed)
        stray = sorted(set(detections) - set(table))
        if stray:
            raise WsimitoError(f"{detections_csv}: slide {stray[0]} has detections but no row in {counts_csv}")
        slides = sorted(table)
    else:
        table = {}
        images = sorted(set(detections) | set(truth))
        slides = sorted(detections)
    if mpp is None:
        mpp = {image: _table_mpp(table, image, detections_csv, counts_csv) for image in images}
    return Selection(images, mpp, notes, slides)


def _table_mpp(table: dict, image: str, detections_csv: Path, counts_csv: Path) -> float:
    if image not in table:
        raise WsimitoError(f"{image}: no mpp known; pass --mpp, or put a counts.csv with columns slide,mpp "
                           f"beside {detections_csv}")
    value = table[image]["mpp"]
    if not value:
        raise WsimitoError(f"{counts_csv}: slide {image} has no mpp; pass --mpp")
    try:
        mpp = float(value)
    except ValueError:
        raise WsimitoError(f"{counts_csv}: slide {image}: mpp {value!r} is not a number") from None
    if not mpp > 0:
        raise WsimitoError(f"{counts_csv}: slide {image}: mpp must be positive, got {value}")
    return mpp


def load_evaluation_inputs(detections_path, truth_path, mpp: float | None = None) -> EvaluationInputs:
    """Detections (a detections.csv or its folder) and truth (any format ``read_truth`` knows), read
    and matched up by :func:`select_images`; truth images left out are noted."""
    truth_path = Path(truth_path)
    detections_csv = find_detections_csv(detections_path)
    detections = read_detections_csv(detections_csv)
    truth = read_truth(truth_path)
    selection = select_images(detections_csv, detections, truth, mpp)
    slides = selection.slides
    if truth and slides and not set(slides) & set(truth):
        raise WsimitoError(
            f"{truth_path}: none of its {len(truth)} images ({_some(truth)}) is among the {len(slides)} "
            f"slides in {detections_csv.parent} ({_some(slides)}); truth keys must equal the slide names"
        )
    notes = list(selection.notes)
    unused = set(truth) - set(selection.images)
    if unused:
        notes.append(f"{len(unused)} images in {truth_path.name} were not evaluated ({_some(sorted(unused))})")
    return EvaluationInputs(detections, truth, selection.images, selection.mpp, notes)


def _some(names, shown: int = 3) -> str:
    names = list(names)
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")
