"""`wsimito bench --quick --json` runs and reports every measurement (speed is never asserted)."""

import json
import subprocess


def test_bench_quick_json(tiny_model):
    result = subprocess.run(["wsimito", "bench", "--device", "cpu", "--quick", "--json", "--model", str(tiny_model)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for key in ("model_tiles_per_s", "read_mpx_per_s", "pipeline_tiles_per_s", "efficiency", "peak_rss_mb"):
        assert report[key] > 0, key
    assert report["efficiency"] == report["pipeline_tiles_per_s"] / report["model_tiles_per_s"]
    assert report["tiles"] > 0 and "pipeline on" in result.stderr
