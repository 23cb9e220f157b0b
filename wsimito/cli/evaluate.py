"""``wsimito evaluate``: detections against ground truth, per image and pooled.

A ``click.Command`` registered on the main group with ``main.add_command(evaluate)``; like the
rest of the CLI it only parses, calls :mod:`wsimito.evaluation` and prints.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from wsimito.cli.common import HELP_SETTINGS
from wsimito.evaluation import (
    MATCH_RULES,
    load_evaluation_inputs,
    plot_precision_recall,
    threshold_sweep,
    write_per_image_csv,
    write_sweep_csv,
)
from wsimito.evaluation import evaluate as evaluate_detections


@click.command("evaluate", context_settings=HELP_SETTINGS)
@click.argument("detections", type=click.Path(exists=True, path_type=Path))
@click.option("--truth", "truth_path", required=True, type=click.Path(exists=True, path_type=Path),
              help="Ground truth: centroid CSV (image,x,y), MIDOG/MIDOG++ json, GeoJSON, MITOS-ATYPIA-14 "
                   "centroid .txt, or a folder of per-image CSVs (TUPAC16/AMIDA13 row,col; MITOS 2012 pixel lists).")
@click.option("--radius-um", type=click.FloatRange(min=0), default=8.0, show_default=True,
              help="A detection matches a truth point within this distance in µm (inclusive), "
                   "converted to pixels with each image's mpp.")
@click.option("--match", "rule", type=click.Choice(MATCH_RULES), default="hungarian", show_default=True,
              help="hungarian: most matches, then least total distance. greedy: the MIDOG rule, each truth "
                   "point in order takes its nearest free detection.")
@click.option("--threshold", type=float, help="Count only detections with score >= this (default: all).")
@click.option("--mpp", type=click.FloatRange(min=0, min_open=True),
              help="µm/px of every image; without it the mpp column of counts.csv beside detections.csv is used.")
@click.option("--json", "as_json", is_flag=True, help="Print the pooled numbers and per-image rows as one JSON object.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the per-image table as CSV.")
@click.option("--sweep-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write sweep.csv (pooled P/R/F1 at every distinct score, whatever --threshold) and "
                   "precision_recall.png here.")
def evaluate(detections, truth_path, radius_um, rule, threshold, mpp, as_json, output, sweep_dir):
    """Score DETECTIONS against ground truth: TP, FP, FN, precision, recall and
    F1 per image and pooled over images (counts summed first), at a radius in µm.

    DETECTIONS is the detections.csv `wsimito detect` writes (columns slide,x,y,
    score in level-0 pixels; slide = image name without extension) or its output
    folder. The images scored are the rows of counts.csv beside it (slides with a
    status other than ok are skipped), else every image in the detections or the
    truth: an image with truth and no detections counts its mitoses as missed.
    Truth keys must equal the slide names (a TUPAC16 folder gives <case>/<image>).
    Precision, recall or F1 with nothing to divide by is shown as - (null in JSON).

    \b
    Examples:
        wsimito evaluate out/ --truth ../shared/data/mitos2012-icpr/centroids.csv
        wsimito evaluate out/detections.csv --truth MIDOG.json --mpp 0.25 --radius-um 7.5 --match greedy
        wsimito evaluate out/ --truth truth.geojson --threshold 0.6 -o metrics.csv --sweep-dir sweep/ --json
    """
    inputs = load_evaluation_inputs(detections, truth_path, mpp)
    result = evaluate_detections(inputs.detections, inputs.truth, inputs.mpp, images=inputs.images,
                                 radius_um=radius_um, rule=rule, threshold=threshold)
    report = result.as_dict()
    if output:
        write_per_image_csv(result, output)
    if sweep_dir:
        sweep = threshold_sweep(inputs.detections, inputs.truth, inputs.mpp, images=inputs.images,
                                radius_um=radius_um, rule=rule)
        write_sweep_csv(sweep, sweep_dir / "sweep.csv")
        plot_precision_recall(sweep, sweep_dir / "precision_recall.png")
        best = sweep.best
        report["sweep"] = {"best_threshold": sweep.best_threshold,
                           "best_f1": None if best is None else float(sweep.f1[best]),
                           "csv": str(sweep_dir / "sweep.csv"), "png": str(sweep_dir / "precision_recall.png")}
    for note in inputs.notes:
        click.echo(f"wsimito: note: {note}", err=True)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        _print_table(report)


def _print_table(report: dict) -> None:
    per_image = report["per_image"]
    pooled = {"image": "pooled", "mpp": None, "n_truth": sum(r["n_truth"] for r in per_image),
              "n_detections": sum(r["n_detections"] for r in per_image),
              **{k: report[k] for k in ("tp", "fp", "fn", "precision", "recall", "f1")}}
    width = max(len(r["image"]) for r in [*per_image, pooled])
    click.echo(f"{'image':<{width}}  {'mpp':>6}  {'truth':>5}  {'det':>5}  {'TP':>5}  {'FP':>5}  {'FN':>5}  "
               f"{'precision':>9}  {'recall':>6}  {'F1':>5}")
    for row in [*per_image, pooled]:
        mpp = "" if row["mpp"] is None else f"{row['mpp']:.4g}"
        click.echo(f"{row['image']:<{width}}  {mpp:>6}  {row['n_truth']:>5}  {row['n_detections']:>5}  "
                   f"{row['tp']:>5}  {row['fp']:>5}  {row['fn']:>5}  {_ratio(row['precision']):>9}  "
                   f"{_ratio(row['recall']):>6}  {_ratio(row['f1']):>5}")
    threshold = "all detections" if report["threshold"] is None else f"score >= {report['threshold']:g}"
    click.echo(f"radius {report['radius_um']:g} µm, {report['match']} matching, {threshold}")
    sweep = report.get("sweep")
    if sweep:
        best = ("F1 never defined" if sweep["best_threshold"] is None
                else f"best F1 {sweep['best_f1']:.3f} at score >= {sweep['best_threshold']:.4g}")
        click.echo(f"sweep: {best}; {sweep['csv']}, {sweep['png']}")


def _ratio(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"
