"""`wsimito merge-reports`: per-shard tables joined unchanged, and loud refusals when the join would be wrong."""

import csv
import subprocess
import sys

import pytest
from click.testing import CliRunner

from wsimito.cli import main
from wsimito.errors import WsimitoError
from wsimito.outputs.tables import write_csv_atomic
from wsimito.reports import merge_reports, read_slide_list
from wsimito.schema import COUNTS_CSV_COLUMNS, DETECTIONS_CSV_COLUMNS


def count_row(slide, status="ok", mitoses=1):
    row = {column: "" for column in COUNTS_CSV_COLUMNS}
    row.update(slide=slide, status=status, mitoses=str(mitoses), tissue_mm2="0.123456789", mpp="0.499",
               threshold="0.5", runtime_s="1.5", path=f"/data/slides/{slide}.svs")
    if status != "ok":
        row.update(mitoses="", error=f"/data/slides/{slide}.svs: not a slide")
    return row


def detection_rows(slide, n):
    return [{"slide": slide, "x": f"{10.5 + i}", "y": "20.25", "score": "0.912345", "x0": "1", "y0": "2",
             "x1": "3", "y1": "4"} for i in range(n)]


def write_shard(out, index, count, slides, failed=()):
    rows = [count_row(s, "error" if s in failed else "ok", 0 if s in failed else len(s) % 3) for s in slides]
    write_csv_atomic(out / f"counts.shard-{index}-of-{count}.csv", COUNTS_CSV_COLUMNS, rows)
    detections = [d for s in slides if s not in failed for d in detection_rows(s, len(s) % 3)]
    write_csv_atomic(out / f"detections.shard-{index}-of-{count}.csv", DETECTIONS_CSV_COLUMNS, detections)


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


SHARDS = [["b-slide", "e"], ["a", "dd"], ["c-slide", "f"]]


def test_merge_follows_the_expected_order_and_copies_cells(tmp_path):
    for index, slides in enumerate(SHARDS):
        write_shard(tmp_path, index, 3, slides)
    listing = tmp_path / "slides.txt"
    order = ["f", "/data/slides/a.svs", "", "# a comment", "c-slide", "dd.svs", "b-slide", "e"]
    listing.write_text("\n".join(order) + "\n")
    summary = merge_reports(tmp_path, read_slide_list(listing))
    wanted = ["f", "a", "c-slide", "dd", "b-slide", "e"]
    counts = read_csv(tmp_path / "counts.csv")
    assert [r["slide"] for r in counts] == wanted and list(counts[0]) == COUNTS_CSV_COLUMNS
    assert counts[0] == count_row("f", mitoses=1)  # text copied as written: no re-rounding
    detections = read_csv(tmp_path / "detections.csv")
    assert detections == [d for s in wanted for d in detection_rows(s, len(s) % 3)]
    assert (summary.shards, summary.slides, summary.mitoses, summary.failed) == (3, 6, len(detections), [])


def test_without_a_list_rows_are_sorted_whatever_the_split(tmp_path):
    for index, slides in enumerate(SHARDS):
        write_shard(tmp_path / "three", index, 3, slides)
    write_shard(tmp_path / "one", 0, 1, sum(SHARDS, []))
    for name in ("three", "one"):
        merge_reports(tmp_path / name)
    assert read_csv(tmp_path / "three/counts.csv") == read_csv(tmp_path / "one/counts.csv")
    assert [r["slide"] for r in read_csv(tmp_path / "one/counts.csv")] == sorted(sum(SHARDS, []))
    assert read_csv(tmp_path / "three/detections.csv") == read_csv(tmp_path / "one/detections.csv")


def merge_cli(*args):
    return CliRunner().invoke(main, ["merge-reports", *map(str, args)])


@pytest.mark.parametrize("problem, message", [
    ("missing shard", "1 of 3 shard table(s) missing (tasks that never ran or failed to start): "
                      "counts.shard-1-of-3.csv"),
    ("duplicate", "1 slide(s) in more than one row, not merged: 'e' in counts.shard-0-of-3.csv and "
                  "counts.shard-2-of-3.csv"),
    ("two splits", "tables of different splits (of-2, of-3); move away the ones of the old run"),
    ("missing expected", "1 of 7 expected slide(s) have no row in any shard: /data/slides/g.svs"),
    ("missing detections", "missing, though counts.shard-2-of-3.csv exists"),
    ("nothing", "no counts.shard-I-of-N.csv tables to merge"),
])
def test_problems_are_one_line_errors_and_nothing_is_written(tmp_path, problem, message):
    shards = [list(s) for s in SHARDS]
    if problem == "duplicate":
        shards[2].append("e")
    if problem != "nothing":
        for index, slides in enumerate(shards):
            if not (problem == "missing shard" and index == 1):
                write_shard(tmp_path, index, 3, slides)
    if problem == "two splits":
        write_shard(tmp_path, 0, 2, ["old"])
    if problem == "missing detections":
        (tmp_path / "detections.shard-2-of-3.csv").unlink()
    args = [tmp_path]
    if problem == "missing expected":
        (tmp_path / "slides.txt").write_text("\n".join([*sum(SHARDS, []), "/data/slides/g.svs"]))
        args += ["--expect", tmp_path / "slides.txt"]
    result = merge_cli(*args)
    assert result.exit_code == 1
    assert result.output.startswith("wsimito: error: ") and message in result.output
    assert result.output.count("\n") == 1, result.output
    assert not (tmp_path / "counts.csv").exists() and not (tmp_path / "detections.csv").exists()
    with pytest.raises(WsimitoError):
        merge_reports(tmp_path, read_slide_list(args[2]) if len(args) > 1 else None)


def test_detections_of_a_slide_from_another_table_are_refused(tmp_path):
    for index, slides in enumerate(SHARDS):
        write_shard(tmp_path, index, 3, slides)
    write_csv_atomic(tmp_path / "detections.shard-0-of-3.csv", DETECTIONS_CSV_COLUMNS, detection_rows("stranger", 2))
    with pytest.raises(WsimitoError, match="detections of slide 'stranger', which has no row"):
        merge_reports(tmp_path)


def test_failed_slides_are_merged_listed_and_exit_1(tmp_path):
    write_shard(tmp_path, 0, 2, ["a", "broken"], failed={"broken"})
    write_shard(tmp_path, 1, 2, ["c"])
    result = merge_cli(tmp_path)
    assert result.exit_code == 1
    assert "wsimito: error: broken: /data/slides/broken.svs: not a slide" in result.output
    assert "2 shards, 3 slides (1 error)" in result.output
    assert [r["status"] for r in read_csv(tmp_path / "counts.csv")] == ["ok", "error", "ok"]
    page = (tmp_path / "index.html").read_text(encoding="utf-8")  # the merged batch on one page, in table order
    assert page.index('id="a"') < page.index('id="broken"') < page.index('id="c"')
    assert "/data/slides/broken.svs: not a slide" in page and "index.html" in result.output


def test_partial_and_no_tissue_slides_keep_their_status_and_are_not_called_errors(tmp_path):
    """A partial slide finished with a problem (some tissue unread): merged, listed and exit 1 as detect does,
    but under its own status, never as an error and never as ok."""
    rows = [count_row("a"), count_row("damaged", "partial", 3), count_row("crop", "no-tissue", 0)]
    rows[1].update(mitoses="3", error="/data/slides/damaged.svs: 1 of 9 tiles unread (0.01 mm² of tissue)")
    rows[2].update(mitoses="0", error="/data/slides/crop.svs: no tissue found")
    write_csv_atomic(tmp_path / "counts.shard-0-of-2.csv", COUNTS_CSV_COLUMNS, rows[:2])
    write_csv_atomic(tmp_path / "detections.shard-0-of-2.csv", DETECTIONS_CSV_COLUMNS,
                     detection_rows("a", 1) + detection_rows("damaged", 3))
    write_csv_atomic(tmp_path / "counts.shard-1-of-2.csv", COUNTS_CSV_COLUMNS, rows[2:])
    write_csv_atomic(tmp_path / "detections.shard-1-of-2.csv", DETECTIONS_CSV_COLUMNS, [])
    result = merge_cli(tmp_path)
    assert result.exit_code == 1
    assert "wsimito: partial: damaged: /data/slides/damaged.svs: 1 of 9 tiles unread" in result.output
    assert "wsimito: no-tissue: crop: /data/slides/crop.svs: no tissue found" in result.output
    assert "error" not in result.output.replace("errors", "")
    assert "2 shards, 3 slides (1 no-tissue, 1 partial), 4 mitoses" in result.output
    merged = {r["slide"]: r for r in read_csv(tmp_path / "counts.csv")}
    assert [merged[s]["status"] for s in ("a", "damaged", "crop")] == ["ok", "partial", "no-tissue"]
    assert merged["damaged"]["mitoses"] == "3"
    summary = merge_reports(tmp_path)
    assert [(slide, status) for slide, status, _ in summary.failed] == [("crop", "no-tissue"), ("damaged", "partial")]


def test_help_has_examples_and_merging_needs_no_torch():
    result = merge_cli("--help")
    assert result.exit_code == 0 and "Examples:" in result.output and "--dependency=afterok" in result.output
    probe = "import sys, wsimito.cli.reports, wsimito.reports; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() == "False"
