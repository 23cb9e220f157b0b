"""The batch tables of ``detect`` (counts.csv, detections.csv) and merging the tables of many shards into one.

A SLURM array writes one pair of tables per task (``counts.shard-I-of-N.csv``, ``detections.shard-I-of-N.csv``)
so tasks never write the same file. ``merge_reports`` joins them into the ``counts.csv`` and ``detections.csv``
a single run would have written, and refuses (a ``WsimitoError`` naming the problem, nothing written) when the
result would be wrong in a way nobody would notice later: a shard's tables missing, a slide twice, shards of
two different splits, or a slide the user said to expect with no row at all.

Cells are copied as the text the shards wrote, so merging never changes a number. This module imports no
torch: ``merge-reports`` starts quickly on a login node.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from wsimito.errors import WsimitoError
from wsimito.outputs.report_page import write_report_page
from wsimito.outputs.tables import write_csv_atomic
from wsimito.schema import COUNTS_CSV_COLUMNS, DETECTION_COLUMNS, DETECTIONS_CSV_COLUMNS

_SHARD_FILE = re.compile(r"^counts\.shard-(\d+)-of-(\d+)\.csv$")
_SHOWN = 5  # names listed in an error message before "and N more"


def table_names(shard: tuple[int, int] | None = None) -> tuple[str, str]:
    """File names of the counts and detections tables of a run, or of one shard of it."""
    suffix = "" if shard is None else f".shard-{shard[0]}-of-{shard[1]}"
    return f"counts{suffix}.csv", f"detections{suffix}.csv"


def write_reports(out, results, shard: tuple[int, int] | None = None) -> None:
    """Write the counts and detections tables of ``results`` (``SlideResult``s, in order) atomically, and the
    batch page index.html; a shard writes no page (shards would overwrite each other's), merge-reports does."""
    out = Path(out)
    counts, detections = table_names(shard)
    write_csv_atomic(out / counts, COUNTS_CSV_COLUMNS, [r.row for r in results])
    rows = ({"slide": r.slide, **dict(zip(DETECTION_COLUMNS, map(float, values)))}
            for r in results for values in r.table)
    write_csv_atomic(out / detections, DETECTIONS_CSV_COLUMNS, rows)
    if shard is None:
        write_report_page(out, [r.row for r in results])


@dataclass
class MergeSummary:
    shards: int
    slides: int
    mitoses: int
    # (slide, status, error) of rows with status != ok: error, partial (finished with tissue unread) or
    # no-tissue; each keeps its own status, a partial slide is not an error and not ok
    failed: list[tuple[str, str, str]] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)  # slides with rows that --expect did not list
    counts_path: Path | None = None
    detections_path: Path | None = None
    page_path: Path | None = None


def read_slide_list(path) -> list[str]:
    """Lines of a slide list (paths or ids; blank lines and ``#`` comments skipped)."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise WsimitoError(f"{path}: cannot read the slide list ({exc.strerror or exc})") from None
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def merge_reports(out, expect: list[str] | None = None) -> MergeSummary:
    """Merge the per-shard tables in ``out`` into ``out/counts.csv`` and ``out/detections.csv``.

    ``expect``: slide paths or ids that must each have a row; rows then follow its order (slides it does not
    list come last, by name). Without it rows are sorted by slide id, whatever the number of shards.
    """
    out = Path(out)
    shards = _find_shards(out)
    rows: dict[str, dict] = {}
    source: dict[str, str] = {}
    detections: dict[str, list[dict]] = {}
    duplicates = []
    for (index, count), counts_path in sorted(shards.items()):
        detections_path = out / table_names((index, count))[1]
        if not detections_path.exists():
            raise WsimitoError(f"{detections_path}: missing, though {counts_path.name} exists (shard {index}/{count} "
                               "did not finish writing; rerun it)")
        shard_rows = _read_table(counts_path, COUNTS_CSV_COLUMNS)
        shard_slides = set()
        for row in shard_rows:
            slide = row["slide"]
            if slide in rows or slide in shard_slides:
                duplicates.append(f"'{slide}' in {source[slide]} and {counts_path.name}")
            rows[slide], source[slide] = row, counts_path.name
            shard_slides.add(slide)
        for row in _read_table(detections_path, DETECTIONS_CSV_COLUMNS):
            if row["slide"] not in shard_slides:
                raise WsimitoError(f"{detections_path}: detections of slide '{row['slide']}', which has no row in "
                                   f"{counts_path.name} (tables of different runs?)")
            detections.setdefault(row["slide"], []).append(row)
    if duplicates:
        raise WsimitoError(f"{out}: {len(duplicates)} slide(s) in more than one row, not merged: "
                           + _listed(duplicates))
    order, unexpected = _order(rows, expect)
    merged = [rows[slide] for slide in order]
    counts_name, detections_name = table_names()
    summary = MergeSummary(shards=len(shards), slides=len(merged),
                           mitoses=sum(len(detections.get(s, [])) for s in order),
                           failed=[(r["slide"], r["status"], r["error"]) for r in merged if r["status"] != "ok"],
                           unexpected=unexpected)
    summary.counts_path = write_csv_atomic(out / counts_name, COUNTS_CSV_COLUMNS, merged)
    summary.detections_path = write_csv_atomic(out / detections_name, DETECTIONS_CSV_COLUMNS,
                                               (d for slide in order for d in detections.get(slide, [])))
    summary.page_path = write_report_page(out, merged)
    return summary


def _find_shards(out: Path) -> dict[tuple[int, int], Path]:
    if not out.is_dir():
        raise WsimitoError(f"{out}: no such output folder")
    found = {}
    for path in out.iterdir():
        match = _SHARD_FILE.match(path.name)
        if match:
            found[(int(match[1]), int(match[2]))] = path
    if not found:
        raise WsimitoError(f"{out}: no counts.shard-I-of-N.csv tables to merge (wsimito detect --shard I/N "
                           "writes them)")
    splits = sorted({count for _, count in found})
    if len(splits) > 1:
        raise WsimitoError(f"{out}: tables of different splits ({', '.join(f'of-{n}' for n in splits)}); "
                           "move away the ones of the old run")
    count = splits[0]
    missing = [f"counts.shard-{i}-of-{count}.csv" for i in range(count) if (i, count) not in found]
    if missing:
        raise WsimitoError(f"{out}: {len(missing)} of {count} shard table(s) missing (tasks that never ran or "
                           "failed to start): " + _listed(missing))
    return found


def _read_table(path: Path, columns: list[str]) -> list[dict]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames != columns:
            raise WsimitoError(f"{path}: not a wsimito table (columns {reader.fieldnames}, expected {columns})")
        return list(reader)


def _order(rows: dict[str, dict], expect: list[str] | None) -> tuple[list[str], list[str]]:
    """Slide ids in output order and those not expected; missing expected slides are an error."""
    if expect is None:
        return sorted(rows), []
    by_path = {row["path"]: slide for slide, row in rows.items()}
    wanted, missing = [], []
    for entry in expect:
        slide = entry if entry in rows else by_path.get(entry, Path(entry).stem)
        if slide in rows:
            if slide not in wanted:
                wanted.append(slide)
        elif entry not in missing:
            missing.append(entry)
    if missing:
        raise WsimitoError(f"{len(missing)} of {len(expect)} expected slide(s) have no row in any shard: "
                           + _listed(missing))
    unexpected = sorted(set(rows) - set(wanted))
    return wanted + unexpected, unexpected


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")
