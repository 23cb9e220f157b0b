"""How much do whole labelled fields teach phase 2? A learning curve in MITOS 2012 fields.

    python benchmarks/field_curve.py --data ../shared/data --seg-model SEGMENTATION.pt --workdir DIR
                                     [--config configs/default-model.yaml] [--fields-per-slide 0 1 2 all]
                                     [--set SECTION.KEY=VALUE ...] [--seed 0]

Leave-one-slide-out as the recipe runs it (``python -m wsimito.recipe --loso``: phase 2 trained per fold, the
``detect`` pipeline on the held-out slide's fields, 8 µm), except that each fold's phase 2 sees only N whole
fields of each training slide, drawn with ``--seed`` (``all``: every one). The crops are the same at every level,
so the curve says what the few fully labelled fields are worth, and how fast the scores improve with them: the
question behind "more labelled fields" as the next step.

Printed per level: the training fields per fold, LOSO TP/FP/FN and F1 at each fold's own threshold, and two
measures of the ranking that no threshold chosen in training can spoil (benchmarks/score_shift.py): the pooled
oracle F1 (one threshold for all folds, chosen on them: an upper bound) and the cross-fold F1 (each slide at the
threshold best on the other slides). Each level's fold models stay in ``WORKDIR/fields-N-seed-S`` and are reused
by a rerun with the same seed, so levels can run as separate processes and a last run prints them all (it runs
``detect`` on the held-out fields again, a few minutes). A rerun with other settings (``--config``, ``--set``,
``--seg-model``) stops rather than mix them: give it another ``--workdir``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
from score_shift import cross_fold, loso_with_truth

from wsimito.config import load_config
from wsimito.recipe import (
    MITOS_SLIDES,
    Progress,
    file_sha256,
    is_mitos_field,
    leave_one_slide_out,
    mitos_fields,
    parse_overrides,
    phase2_fields,
    refuse_field_tuned,
)
from wsimito.segmentation import SegmentationModel

REPO = Path(__file__).resolve().parents[1]


def kept_fields(data: Path, per_slide: int | None, seed: int, held_out: str) -> list[str]:
    """The whole fields a fold's phase 2 sees: ``per_slide`` of each training slide (None: all), drawn by ``seed``
    per slide, so a level keeps the same fields of a slide in every fold."""
    kept = []
    for index, slide in enumerate(MITOS_SLIDES):
        if slide != held_out:
            names = sorted(path.stem for path in mitos_fields(data, [slide])[0])
            drawn = np.random.default_rng([seed, index]).permutation(names)
            kept += names if per_slide is None else [str(name) for name in drawn[:per_slide]]
    return sorted(kept)


class FewerFields:
    """The recipe's phase-2 images for a fold (``training_set`` of wsimito.recipe.leave_one_slide_out), with
    only the ``kept_fields``; ``load`` gives every image, once, when a fold first needs training."""

    def __init__(self, load, segmentation, data: Path, per_slide: int | None, seed: int):
        self.load, self.segmentation, self.data, self.per_slide, self.seed = load, segmentation, data, per_slide, seed

    def __call__(self, held_out: tuple):
        (slide,) = held_out
        kept = kept_fields(self.data, self.per_slide, self.seed, slide)
        return self.segmentation, [f for f in self.load() if not is_mitos_field(f) or f.name in kept]


def level_row(level: str, seed: int, workdir: Path, report: dict, data: Path, training_fields: list) -> str:
    """One table row: a level's training fields per fold, its LOSO counts, F1 pooled and per fold, and its two
    rankings."""
    detections, folds, truth = loso_with_truth(workdir, data)
    crossed, _ = cross_fold(detections, truth, folds)
    pooled = report["pooled"]
    per_fold = " / ".join(str(n) for n in training_fields)
    fold_f1 = " / ".join(f"{report[slide]['f1']:.3f}" for slide in MITOS_SLIDES)
    return (f"| {level} | {seed} | {per_fold} | {pooled['tp']}/{pooled['fp']}/{pooled['fn']} | {pooled['f1']:.3f} | "
            f"{fold_f1} | {report.get('oracle', {}).get('f1', float('nan')):.3f} | {crossed:.3f} |")


def same_settings(workdir: Path, settings: dict) -> None:
    """Record a level's settings in its folder, or stop if the folder's fold models were trained with others."""
    path = workdir / "settings.json"
    if path.exists() and json.loads(path.read_text()) != settings:
        raise SystemExit(f"{workdir} holds fold models trained with other settings: give another --workdir")
    path.write_text(json.dumps(settings, indent=1, sort_keys=True))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the shared/data folder")
    parser.add_argument("--seg-model", type=Path, required=True, help="phase 1 (a recipe's segmentation.pt)")
    parser.add_argument("--workdir", type=Path, required=True, help="each level's folds are kept here and reused")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "default-model.yaml")
    parser.add_argument("--fields-per-slide", nargs="+", default=["0", "1", "2", "all"], metavar="N",
                        help="whole fields per training slide, one level each (an integer, or all)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a config override for every level (as the recipe's --set)")
    parser.add_argument("--seed", type=int, default=0, help="phase 2's seed, and which fields each level keeps")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    config = load_config(args.config, parse_overrides(args.overrides))
    segmentation = SegmentationModel.load(args.seg_model, args.device)
    refuse_field_tuned(args.seg_model, segmentation)
    config = replace(config, tiling=replace(config.tiling, mpp=segmentation.mpp))
    seg_sha256 = file_sha256(args.seg_model)
    progress = Progress()
    images = None

    def load():
        nonlocal images
        if images is None:
            progress("loading crops and fields, making boxes")
            images = phase2_fields(args.data, segmentation, config, args.device, "segmentation")
        return images

    rows = []
    for level in args.fields_per_slide:
        per_slide = None if level == "all" else int(level)
        workdir = args.workdir / f"fields-{level}-seed-{args.seed}"
        workdir.mkdir(parents=True, exist_ok=True)
        same_settings(workdir, {"config": config.to_dict(), "seg_model_sha256": seg_sha256, "fields_per_slide": level,
                                "seed": args.seed})
        training = FewerFields(load, segmentation, args.data, per_slide, args.seed)
        with tempfile.TemporaryDirectory(prefix="wsimito-field-curve-") as scratch:
            report = leave_one_slide_out(training, config, args.seed, args.device, args.data, workdir,
                                         Path(scratch), lambda m, lv=level: progress(f"{lv} per slide: {m}"))
        counts = [len(kept_fields(args.data, per_slide, args.seed, slide)) for slide in MITOS_SLIDES]
        rows.append(level_row(level, args.seed, workdir, report, args.data, counts))
    print("| fields per training slide | seed | training fields (folds A00 / A02 / A03) | LOSO TP/FP/FN | F1 | "
          "F1 per fold | pooled oracle F1 | cross-fold F1 |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    sys.exit(main())
