"""Wall time and peak memory of wsimito.synth.write_slide at two slide sizes.

Each size runs in its own Python process, so each peak RSS belongs to that size alone (the process's own
ru_maxrss; the render and encode threads are inside it). The slides go to a temporary folder that is removed.

    python benchmarks/synth_slide_memory.py [--sizes 20000 40000] [--tile 512] [--flavour generic]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, resource, sys, time
from pathlib import Path
from wsimito.synth import write_slide
size, tile, flavour, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
start = time.perf_counter()
truth = write_slide(out / f"synth_{size}.tiff", (size, size), tile=tile, flavour=flavour, seed=size)
wall = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"size": size, "wall_s": round(wall, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
                  "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
                  "file_mb": round(truth.path.stat().st_size / 2**20, 1), "levels": len(truth.levels),
                  "mitoses": len(truth.mitoses), "tissue_mm2": round(truth.tissue_area_mm2, 2)}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20000, 40000])
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--flavour", default="generic", choices=["generic", "aperio"])
    args = parser.parse_args()
    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="wsimito-synth-bench-") as tmp:
        for size in args.sizes:
            done = subprocess.run([sys.executable, "-c", CHILD, str(size), str(args.tile), args.flavour, tmp],
                                  cwd=repo, capture_output=True, text=True, check=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{size}x{size}: {result['wall_s']} s wall, {result['cpu_s']} s CPU, peak RSS "
                  f"{result['peak_rss_mb']} MB, {result['file_mb']} MB file, {result['levels']} levels, "
                  f"{result['mitoses']} mitoses in {result['tissue_mm2']} mm² of tissue", flush=True)
            for leftover in Path(tmp).iterdir():
                leftover.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
