"""``wsimito merge-reports``: the tables of all shards of a SLURM array joined into one counts.csv and detections.csv.

A ``click.Command`` registered on the main group; it parses, calls :func:`wsimito.reports.merge_reports`, and
prints. It imports no torch, so it starts at once on a login node or as a tiny dependent job.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from wsimito.cli.common import HELP_SETTINGS


@click.command("merge-reports", context_settings=HELP_SETTINGS)
@click.argument("output", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--expect", "expect_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Text file of the slides that must all have a row: paths (as given to detect) or slide ids, "
                   "one per line; blank lines and # comments are skipped. Rows then follow its order.")
def merge_reports(output, expect_path):
    """Join the per-shard tables in OUTPUT (counts.shard-I-of-N.csv and
    detections.shard-I-of-N.csv, written by `wsimito detect --shard I/N`) into
    OUTPUT/counts.csv and OUTPUT/detections.csv, the tables one run over all
    slides would have written, and the batch page OUTPUT/index.html. Cells are
    copied unchanged.

    Nothing is written, and the exit code is 1 with a one-line error, when a
    shard's tables are missing, tables of two different splits are mixed, a
    slide has more than one row, or (with --expect) an expected slide has no
    row. Without --expect rows are sorted by slide id. Slides whose status is
    not ok are listed with it (error; partial: finished, some tissue unread;
    no-tissue), and the exit code is 1, as `detect` does.

    \b
    Examples:
        wsimito merge-reports out/
        ls slides/*.svs > slides.txt && wsimito merge-reports out/ --expect slides.txt
        # as the last step of a SLURM array (see slurm/README.md):
        sbatch --dependency=afterok:$ARRAY_JOB slurm/merge.sbatch out/ --expect slides.txt
    """
    from wsimito.reports import merge_reports as merge
    from wsimito.reports import read_slide_list

    expect = read_slide_list(expect_path) if expect_path else None
    summary = merge(output, expect)
    for slide, status, error in summary.failed:  # as detect says them: a partial slide is not an error
        click.echo(f"wsimito: {status}: {slide}: {error}", err=True)
    if summary.unexpected:
        click.echo(f"wsimito: note: {len(summary.unexpected)} slide(s) not in {expect_path} kept at the end: "
                   + ", ".join(summary.unexpected[:5]) + (" ..." if len(summary.unexpected) > 5 else ""), err=True)
    statuses = [status for _, status, _ in summary.failed]
    problems = ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses)) or "all ok"
    click.echo(f"{summary.shards} shards, {summary.slides} slides ({problems}), {summary.mitoses} "
               f"mitoses -> {summary.counts_path}, {summary.detections_path}, {summary.page_path}", err=True)
    if summary.failed:
        sys.exit(1)
