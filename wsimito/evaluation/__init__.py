"""Evaluation: detections scored against ground truth, and the clinical numbers of a slide.

Matching rules and P/R/F1 (:mod:`.matching`), their bootstrap interval (:mod:`.bootstrap`),
threshold sweeps (:mod:`.sweeps`), their plot
(:mod:`.plots`) and CSV tables (:mod:`.tables`), choosing what to score (:mod:`.selection`),
and density, hotspot and Nottingham score (:mod:`.clinical`). Importing this package loads
neither SciPy nor OpenCV; the functions that need them import them when called.
"""

from wsimito.evaluation.bootstrap import pooled_f1_interval
from wsimito.evaluation.clinical import (
    HOTSPOT_SHAPES,
    NOTTINGHAM_CUTOFFS,
    Hotspot,
    count_per_10_hpf,
    find_hotspot,
    mitoses_per_mm2,
    mitotic_score,
    nottingham_cutoffs,
    slide_summary,
)
from wsimito.evaluation.matching import (
    MATCH_RULES,
    Counts,
    Detections,
    Evaluation,
    ImageResult,
    count_matches,
    evaluate,
    evaluate_image,
    match_points,
)
from wsimito.evaluation.plots import plot_precision_recall
from wsimito.evaluation.selection import (
    EvaluationInputs,
    Selection,
    find_detections_csv,
    load_evaluation_inputs,
    select_images,
)
from wsimito.evaluation.sweeps import Sweep, threshold_sweep
from wsimito.evaluation.tables import read_detections_csv, read_slide_table, write_per_image_csv, write_sweep_csv

__all__ = [
    "HOTSPOT_SHAPES", "MATCH_RULES", "NOTTINGHAM_CUTOFFS",
    "Counts", "Detections", "Evaluation", "EvaluationInputs", "Hotspot", "ImageResult", "Selection", "Sweep",
    "count_matches", "count_per_10_hpf", "evaluate", "evaluate_image", "find_detections_csv", "find_hotspot",
    "load_evaluation_inputs", "match_points", "mitoses_per_mm2", "mitotic_score", "nottingham_cutoffs",
    "plot_precision_recall", "pooled_f1_interval", "read_detections_csv", "read_slide_table", "select_images",
    "slide_summary", "threshold_sweep", "write_per_image_csv", "write_sweep_csv",
]
