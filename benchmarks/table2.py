"""The paper's Table 2 on our data: where phase 2's label boxes come from, and what that is worth.

    python benchmarks/table2.py --data ../shared/data [--config configs/default-model.yaml] [--workdir DIR]
                                [--seg-model SEGMENTATION.pt] [--set SECTION.KEY=VALUE ...]

Three detectors, each evaluated leave-one-slide-out on the MITOS 2012 fields exactly as the default model is
(``python -m wsimito.recipe --loso``), differing only in phase 1:

* **wavelet U-Net**: boxes (and proposals) from the paper's wavelet U-Net;
* **plain U-Net**: the same network with max-pooling and transposed convolutions instead of the Haar
  transform and its inverse;
* **fixed boxes**: label boxes are fixed squares around the points (boxes.fallback_size_um), proposals
  still from the wavelet U-Net, so only the labels differ.

``--seg-model`` gives the wavelet rows an already trained wavelet phase 1 (a bundle's ``segmentation.pt``),
so only the plain U-Net's phase 1 is trained. Prints a table of pooled precision, recall and F1 at 8 µm; each
run's JSON report stays in the workdir.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_recipe(name: str, args, workdir: Path, extra: list[str]) -> dict:
    report = workdir / f"{name}.json"
    if not report.exists():
        command = [sys.executable, "-m", "wsimito.recipe", "--data", str(args.data), "--config", str(args.config),
                   "--seed", str(args.seed), "--loso", "--report", str(report), *extra]
        command += [option for item in args.overrides for option in ("--set", item)]
        print(" ".join(command), file=sys.stderr, flush=True)
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return json.loads(report.read_text())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "default-model.yaml")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="reports are kept here and reused on a rerun")
    parser.add_argument("--seg-model", type=Path, help="a trained wavelet phase 1 for the wavelet rows")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a config override for all three runs (as the recipe's --set)")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="wsimito-table2-"))
    workdir.mkdir(parents=True, exist_ok=True)
    wavelet_bundle = workdir / "wavelet-model"
    wavelet = args.seg_model or wavelet_bundle / "segmentation.pt"
    given = ["--seg-model", str(args.seg_model)] if args.seg_model else []
    rows = {
        "wavelet U-Net": run_recipe("wavelet", args, workdir, ["-o", str(wavelet_bundle), *given]),
        "plain U-Net": run_recipe("plain", args, workdir, ["--set", "segmentation.arch=plain"]),
        "fixed boxes": run_recipe("fixed", args, workdir, ["--boxes", "fixed", "--seg-model", str(wavelet)]),
    }
    print("| phase-1 boxes | precision | recall | F1 | TP | FP | FN |\n|---|---|---|---|---|---|---|")
    for name, report in rows.items():
        p = report["loso"]["pooled"]
        print(f"| {name} | {p['precision']:.3f} | {p['recall']:.3f} | {p['f1']:.3f} | {p['tp']} | {p['fp']} "
              f"| {p['fn']} |")


if __name__ == "__main__":
    main()
