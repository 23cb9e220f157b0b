"""The command line as a user runs it: real entry point, real files, one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import readme_setup_commands

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "wsimito/data/CMU-1-Small-Region.svs"


def wsimito(*args, cwd=REPO):
    return subprocess.run(["wsimito", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_readme_sets_up_in_two_lines_and_ci_runs_the_test_line():
    """Two one-line commands: install and detect on the sample (run by test_default_model), then install the tests'
    needs, SLURM included, and run them: .ci/run's last line is that line, as written."""
    first, tests = readme_setup_commands()
    assert "\n" not in first and "\n" not in tests
    assert first == "pip install torch==2.13.0 -e . && wsimito detect wsimito/data/CMU-1-Small-Region.svs -o out/"
    assert tests == "bash .ci/install-slurm.sh && pip install torch==2.13.0 -e '.[test]' && python -m pytest"
    assert (REPO / ".ci/run").read_text().strip().splitlines()[-1] == tests


def test_info_on_the_shipped_sample():
    result = wsimito("info", SAMPLE.relative_to(REPO))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "2220 x 2967 px" in out and "0.499 µm/px" in out and "Aperio ImageDescription MPP" in out
    assert "openslide (aperio)" in out and "mm²" in out and "tiles" in out


def test_info_json_on_real_files(data):
    files = [
        SAMPLE,
        data / "histolab-test-slides/tcga-cr-7395-01a-01-ts1.svs",
        data / "mitos2012-icpr/images/A00_00.jpg",
    ]
    result = wsimito("info", "--json", "--mpp", "0.2456", *files)
    assert result.returncode == 0, result.stderr
    reports = json.loads(result.stdout)
    assert [(r["width"], r["height"]) for r in reports] == [(2220, 2967), (4443, 3567), (2084, 2084)]
    assert all(r["mpp"] == 0.2456 and r["mpp_source"] == "--mpp" for r in reports)
    assert reports[1]["levels"] == [[4443, 3567, 1.0], [2221, 1783, pytest.approx(2.0005, abs=1e-4)]]
    assert all(r["tiles"] > 0 and r["tissue_mm2"] > 0 for r in reports)


def test_info_mpp_sources_without_override(data):
    result = wsimito("info", "--json", SAMPLE, data / "openslide-python-fixtures/boxes_0.dcm")
    reports = json.loads(result.stdout)
    assert [r["mpp_source"] for r in reports] == [
        "Aperio ImageDescription MPP (openslide.mpp-x/y)",
        "dicom metadata (openslide.mpp-x/y)",
    ]


def test_bad_files_in_a_batch(data):
    """Each bad file: one line naming it and the problem; the good one still reported; exit 1; no traceback."""
    bad = [
        data / "histolab-test-slides/broken.svs",
        data / "histolab-test-slides/tcga-cr-7395-01a-01-ts1.svs",  # no mpp
        data / "openslide-python-fixtures/unopenable.tiff",
        data / "openslide-python-fixtures/unreadable.svs",
        data / "mitos2012-icpr/images/A00_00.jpg",  # no mpp
        REPO / "no-such-slide.svs",
    ]
    result = wsimito("info", SAMPLE, *bad)
    assert result.returncode == 1
    assert "CMU-1-Small-Region" in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == len(bad)
    for path, line in zip(bad, lines):
        assert line.startswith("wsimito: error: ") and str(path) in line
    assert "Traceback" not in result.stderr
    assert "--mpp" in lines[1] and "--mpp" in lines[4]
    json_result = wsimito("info", "--json", *bad)
    assert [r["status"] for r in json.loads(json_result.stdout)] == ["error"] * len(bad)


def test_bad_config_is_one_line(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("tiling:\n  tile_sise: 3\n")
    result = wsimito("info", "--config", config, SAMPLE)
    assert result.returncode == 2  # a setting, refused before any slide, as click refuses a wrong option
    assert result.stderr.strip().count("\n") == 0 and "tile_sise" in result.stderr
    debug = wsimito("--debug", "info", "--config", config, SAMPLE)
    assert "Traceback" in debug.stderr


def test_help_teaches():
    result = wsimito("info", "--help")
    assert result.returncode == 0
    assert "--mpp" in result.stdout and "Examples" in result.stdout
    assert subprocess.run([sys.executable, "-m", "wsimito", "--version"], capture_output=True, text=True).stdout.startswith("wsimito")


def test_synth_then_info(tmp_path):
    result = wsimito("synth", tmp_path, "--fields", 2, "--field-size", 256, "--slide", "1200x1600", "--seed", 3)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "centroids.csv").exists() and (tmp_path / "synthetic.mitoses.csv").exists()
    reports = json.loads(wsimito("info", "--json", tmp_path / "synthetic.tiff", tmp_path / "field_000.png").stdout)
    assert [(r["width"], r["height"]) for r in reports] == [(1600, 1200), (256, 256)]
    assert reports[0]["mpp_source"].startswith("TIFF resolution tags") and reports[0]["mpp"] == pytest.approx(0.25)
    assert reports[1]["mpp_source"] == "image DPI field" and reports[1]["mpp"] == pytest.approx(0.25)
    assert len(reports[0]["levels"]) >= 2
    bad = wsimito("synth", tmp_path, "--slide", "12x12")
    assert bad.returncode == 2 and "at least 256" in bad.stderr
