"""Peak memory of `wsimito detect` against slide size: it must stay flat (bounded tiles in flight).

    python benchmarks/detect_memory.py --model DETECTOR_DIR --sizes 20000 40000 [--workdir /tmp/bench]

Writes a synthetic pyramidal slide of each size (wsimito synth, 0.25 µm/px), runs `wsimito detect` on it in
its own process and prints wall time, tiles, tiles/s and that process's peak RSS.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def peak_rss_of(command: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one child process."""
    script = (
        "import resource, subprocess, sys, time, json\n"
        "t = time.perf_counter(); rc = subprocess.call(sys.argv[1:])\n"
        "print(json.dumps({'rc': rc, 'wall': time.perf_counter() - t,"
        " 'rss_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, *command], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["rc"]:
        raise SystemExit(f"{' '.join(command)} failed with exit code {result['rc']}: {out.stderr[-2000:]}")
    return result["wall"], result["rss_mb"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20000, 40000])
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="wsimito-detect-memory-"))
    rows = []
    for size in args.sizes:
        folder = workdir / f"s{size}"
        slide = folder / "synthetic.tiff"
        if not slide.exists():
            started = time.perf_counter()
            subprocess.run(["wsimito", "synth", str(folder), "--fields", "0", "--slide", str(size)], check=True)
            print(f"{size}: slide written in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        wall, rss = peak_rss_of(["wsimito", "detect", str(slide), "-o", str(folder / "out"), "--model",
                                 str(args.model), "--device", "cpu", "--quiet", "--overwrite",
                                 "--workers", str(args.workers)])
        with open(folder / "out" / "counts.csv", newline="") as fh:
            counts = next(csv.DictReader(fh))
        rows.append({"size": size, "tiles": int(counts["tiles"]), "wall_s": round(wall, 1),
                     "tiles_per_s": round(int(counts["tiles"]) / wall, 2), "peak_rss_mb": round(rss),
                     "tissue_mm2": float(counts["tissue_mm2"]), "mitoses": int(counts["mitoses"])})
        print(json.dumps(rows[-1]), file=sys.stderr)
    print("| slide | tissue tiles | wall s | tiles/s | peak RSS MB |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['size']}² | {row['tiles']} | {row['wall_s']} | {row['tiles_per_s']} | {row['peak_rss_mb']} |")


if __name__ == "__main__":
    main()
