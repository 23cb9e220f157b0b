"""The recipe that trains wsimito's shipped default model from the real data in ``shared/data``.

One seeded command::

    python -m wsimito.recipe --data ../shared/data -o wsimito/weights/default --config configs/default-model.yaml --loso

Phase 1 (segmentation) learns from pixel labels: synthetic fields with exact
masks, the real AMi-Br crops of the masks' Train split with their real pixel
masks, and the PRLAB non-mitosis patches; it is validated on the Test split's
crops (other source slides). Phase 2 (R-CNN) learns from real point labels
turned into boxes by phase 1: the AMi-Br Train crops (a mitosis at the centre,
the rest of the crop as negatives), the PRLAB patches (65 mitoses, 178 non-mitosis patches), and the
MITOS 2012 fields (negatives: everything away from their labelled points).
``--loso`` first evaluates leave-one-slide-out on the MITOS 2012 fields
(slides A00, A02, A03: phase 2 trained without one slide's fields, then the
``detect`` pipeline run on them and scored at 8 µm), then trains the final
model on everything. With ``train_seg.field_steps`` phase 1 is then fine-tuned
on whole MITOS 2012 fields (masks from their points), per fold on the training
slides' fields only, and the final model's on all of them; without it phase 1
has seen no MITOS 2012 field and is shared by the folds. Every stage's model is
kept in ``--workdir`` and reused by a rerun, and ``--folds`` runs some folds
only, so the folds can run as separate processes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np

from wsimito.acceptance import count_on_slide, crop_recall
from wsimito.bundle import MitosisModel, bundle_sha256
from wsimito.config import Config, load_config
from wsimito.datasets.crops import amibr_crops, amibr_masks, atnorm_crops, prlab_patches
from wsimito.datasets.masks import find_labelled_images, read_gray, read_rgb
from wsimito.datasets.points import read_centroid_csv
from wsimito.errors import WsimitoError
from wsimito.evaluation import Detections, evaluate, pooled_f1_interval, threshold_sweep
from wsimito.outputs.tables import write_csv_atomic
from wsimito.pipeline import detect_slide
from wsimito.point_masks import point_mask
from wsimito.resample import resample_to_mpp
from wsimito.segmentation import SegmentationModel, segment_array
from wsimito.synth import write_fields
from wsimito.train_det import LabelledField, load_fields, train_detector
from wsimito.train_seg import fine_tune_on_fields, fine_tune_settings, train_segmentation

MITOS_MPP = 0.2456
SAMPLE_SLIDE = Path(__file__).parent / "data" / "CMU-1-Small-Region.svs"
MITOS_SLIDES = ("A00", "A02", "A03")
LOSO_DETECTIONS = "loso-detections.csv"


class Progress:
    """Stage lines on stderr with the time since the start: the recipe runs for tens of minutes."""

    def __init__(self):
        self.started = time.perf_counter()

    def __call__(self, message: str) -> None:
        print(f"[{self.elapsed / 60:5.1f} min] {message}", file=sys.stderr, flush=True)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def phase1_images(data: Path, scratch: Path, config: Config, seed: int, synthetic_fields: int, exclude=()):
    """(RGB, mask) pairs at the model mpp, as (training, validation).

    Training: synthetic fields with exact masks, the AMi-Br crops of the masks'
    Train split with their real pixel masks, and the PRLAB non-mitosis patches
    (an empty mask: real look-alikes). Validation: the AMi-Br crops of the Test
    split, whose source slides are not in training.
    """
    write_fields(scratch / "synthetic", n=synthetic_fields, size=512, mpp=config.tiling.mpp, seed=seed)
    train = [item.load() for item in find_labelled_images([scratch / "synthetic"])]
    val = []
    masks = amibr_masks(data / "ami-br-masks")
    for crop in _amibr(data, exclude):
        mask = masks[crop.path.stem]
        pair = resample_to_mpp(read_rgb(crop.path), (read_gray(mask.path) > 0).astype(np.uint8), crop.mpp,
                               config.tiling.mpp)
        (train if mask.split == "Train" else val).append(pair)
    for patch in prlab_patches(data / "prlab-mitosis-patches"):
        if not len(patch.points):
            rgb = read_rgb(patch.path)
            train.append(resample_to_mpp(rgb, np.zeros(rgb.shape[:2], np.uint8), patch.mpp, config.tiling.mpp))
    return train, val


def _without(crops, exclude=()):
    """``crops`` less those of the ``exclude``d sources (the first part of a crop's group: MIDOG21, TUPAC16,
    AtNorM-MD, prlab)."""
    return [c for c in crops if c.group.split("/")[0] not in exclude]


def _amibr(data: Path, exclude=(), split: str | None = None):
    """AMi-Br crops less the ``exclude``d source datasets; only the masks' ``split`` ("Train"/"Test") if given."""
    crops = _without(amibr_crops(data / "ami-br-patches"), exclude)
    if split is None:
        return crops
    masks = amibr_masks(data / "ami-br-masks")
    return [c for c in crops if masks[c.path.stem].split == split]


def mitos_fields(data: Path, slides) -> tuple[list[Path], dict]:
    """The MITOS 2012 field images of ``slides`` and their labelled points."""
    folder = data / "mitos2012-icpr"
    paths = sorted(p for p in (folder / "images").glob("*.jpg") if p.stem[:3] in slides)
    points = {k: v for k, v in read_centroid_csv(folder / "centroids.csv").items() if k[:3] in slides}
    return paths, points


def phase2_fields(data: Path, segmentation: SegmentationModel, config: Config, device, box_mode: str,
                  exclude=()) -> list[LabelledField]:
    """Every phase-2 image with its boxes and ``segmentation``'s map, for every fold that shares it: AMi-Br
    crops of the Train split (the Test split's slides stay unseen), four fifths of the AtNorM-MD crops,
    PRLAB patches, all MITOS 2012 fields."""
    crops = _without(_amibr(data, split="Train") + atnorm_split(data)[0]
                     + prlab_patches(data / "prlab-mitosis-patches"), exclude)
    fields, field_points = mitos_fields(data, MITOS_SLIDES)
    mpp = {c.path.stem: c.mpp for c in crops} | {p.stem: MITOS_MPP for p in fields}
    points = {c.path.stem: c.points for c in crops} | field_points
    return load_fields([c.path for c in crops] + fields, config, segmentation, mpp=mpp, points=points,
                       device=device, box_mode=box_mode)


def point_labelled_fields(data: Path, slides, segmentation: SegmentationModel, config: Config, device,
                          names=None) -> list:
    """(RGB, mask) of the MITOS 2012 fields of ``slides`` (only those ``names``d, if given) at the model mpp,
    masks from their points and ``segmentation``'s components (wsimito.point_masks)."""
    paths, points = mitos_fields(data, slides)
    paths = [p for p in paths if names is None or p.stem in names]
    scale = MITOS_MPP / config.tiling.mpp
    pairs = []
    for path in paths:
        rgb = read_rgb(path)
        rgb, _ = resample_to_mpp(rgb, np.zeros(rgb.shape[:2], np.uint8), MITOS_MPP, config.tiling.mpp)
        prob = segment_array(segmentation, rgb, device=device)
        pairs.append((rgb, point_mask(prob, np.asarray(points.get(path.stem, np.zeros((0, 2))), float) * scale,
                                      config.boxes.threshold)))
    return pairs


def phase1_on_fields(base: Path, crops, data: Path, slides, config: Config, out: Path, seed: int, device,
                     progress) -> SegmentationModel:
    """Phase 1 (``base``, a model file) fine-tuned on the MITOS 2012 fields of ``slides`` next to its
    ``crops``; written to ``out``, and reused from there by a rerun."""
    name = "+".join(slides)
    provenance = {"slides": list(slides), "base_sha256": file_sha256(base)}
    wanted = fine_tune_settings(config, seed, provenance)
    if out.exists():
        segmentation = SegmentationModel.load(out, device)
        made = {k: v for k, v in segmentation.info.get("fine_tune", {}).items() if k != "fields"}
        if made != wanted:
            raise WsimitoError(f"{out} was fine-tuned with other settings, fields or base phase 1 ({made}, not "
                               f"{wanted}): delete it, or use another --workdir")
        progress(f"phase 1 on the fields of {name}: reusing {out}")
        return segmentation
    segmentation = SegmentationModel.load(base, device)
    fields = point_labelled_fields(data, slides, segmentation, config, device)
    steps = config.train_seg.field_steps
    progress(f"phase 1 on the fields of {name}: {steps} steps on {len(fields)} fields and {len(crops)} crops")

    def on_step(done, total, loss):
        if done % 200 == 0 or done == total:
            progress(f"phase 1 on the fields of {name}: step {done}/{total}, loss {loss:.3f}")

    return fine_tune_on_fields(segmentation, crops, fields, config, out, seed=seed, device=device, on_step=on_step,
                               provenance=provenance)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def refuse_field_tuned(path: Path, segmentation: SegmentationModel) -> None:
    """Stop a leave-one-slide-out run given a phase 1 fine-tuned on MITOS 2012 fields: it has seen the held-out
    fields."""
    if "fine_tune" in segmentation.info:
        raise SystemExit(f"{path}: this phase 1 was fine-tuned on MITOS 2012 fields, so leave-one-slide-out would "
                         "test on fields it has seen; give the phase 1 before that (the recipe's segmentation.pt)")


def atnorm_split(data: Path) -> tuple[list, list]:
    """AtNorM-MD crops for training and the fifth held out (by a hash of the file, so stable across runs)."""
    crops = atnorm_crops(data / "atnorm-md-crops")
    held_out = [zlib.crc32(c.group.encode()) % 5 == 0 for c in crops]
    return [c for c, h in zip(crops, held_out) if not h], [c for c, h in zip(crops, held_out) if h]


def held_out_crops(data: Path, per_source: int, seed: int, exclude=()) -> dict:
    """Up to ``per_source`` crops of each source phase 2 never sees: AMi-Br Test split (MIDOG21, TUPAC16
    slides apart from training) and the held-out fifth of AtNorM-MD."""
    test = _amibr(data, exclude, split="Test")
    sources = {name: [c for c in test if c.group.startswith(name + "/")] for name in ("MIDOG21", "TUPAC16")}
    sources["AtNorM-MD"] = atnorm_split(data)[1]
    rng = np.random.default_rng(seed)
    return {name: [crops[i] for i in sorted(rng.permutation(len(crops))[:per_source])]
            for name, crops in sources.items() if crops}


def is_mitos_field(field: LabelledField, slides=MITOS_SLIDES) -> bool:
    return field.name[:3] in slides and field.name[3:4] == "_"


def score_fields(model_dir: Path, model, config: Config, fields: list[Path], truth: dict, device,
                 scratch: Path) -> dict:
    """Run the ``detect`` pipeline on whole fields; precision, recall and F1 at the evaluation radius, at
    the model's own threshold (chosen in training, see detector.choose_threshold)."""
    detections, tissue_mm2 = {}, 0.0
    for path in fields:
        result = detect_slide(path, scratch, model, bundle_sha256(model_dir), config, 0.0, device, workers=2,
                              mpp=MITOS_MPP)
        detections[path.stem] = Detections(result.table[:, :2], result.table[:, 2])
        tissue_mm2 += result.row["tissue_mm2"]
    truth = {p.stem: truth.get(p.stem, np.zeros((0, 2))) for p in fields}
    settings = {"radius_um": config.evaluation.radius_um, "rule": config.evaluation.match}
    scored = evaluate(detections, truth, MITOS_MPP, threshold=model.config.detector.threshold, **settings)
    # what the R-CNN had to choose from: a low value points at the proposals, not the scoring
    reachable = evaluate(detections, truth, MITOS_MPP, **settings).pooled.recall
    per_field = [[r.counts.tp, r.counts.fp, r.counts.fn] for r in scored.per_image]
    return {"pooled": scored.pooled.as_dict(), "recall_any_score": reachable, "detections": detections,
            "truth": truth, "per_field": per_field, "tissue_mm2": tissue_mm2}


def _counts(result: dict) -> np.ndarray:
    return np.array([result["tp"], result["fp"], result["fn"]], float)


def _prf(tp, fp, fn) -> dict:
    return {"tp": int(tp), "fp": int(fp), "fn": int(fn), "precision": tp / max(tp + fp, 1),
            "recall": tp / max(tp + fn, 1), "f1": 2 * tp / max(2 * tp + fp + fn, 1)}


def leave_one_slide_out(training_set, config, seed, device, data: Path, workdir: Path, scratch: Path,
                        progress, folds=MITOS_SLIDES) -> dict:
    """Per held-out slide and pooled: P/R/F1 of the detect pipeline at the configured threshold, a bootstrap
    95% interval of the pooled F1 over fields, false detections per mm² of tissue, and the pooled threshold
    sweep's best F1 (an oracle: chosen on the test folds, reported, never shipped). Each fold's model is kept
    in ``workdir`` and reused by a rerun, so ``folds`` (held-out slides) can run as separate processes and a
    last run with all of them pools them; every held-out detection, at any score, goes to ``LOSO_DETECTIONS``
    there. ``training_set(held_out_slides)`` gives the phase-1 model and the phase-2 images for a fold."""
    folds = tuple(dict.fromkeys(folds))  # each once, in the order given
    report, pooled = {"folds": list(folds), "all_folds": set(folds) == set(MITOS_SLIDES)}, np.zeros(3)
    detections, truth, per_field, tissue_mm2 = {}, {}, [], 0.0
    for held_out in folds:
        fold_dir = workdir / f"fold-{held_out}"
        if (fold_dir / "model.json").exists():
            progress(f"fold {held_out}: reusing {fold_dir}")
            model = MitosisModel.load(fold_dir, device)
        else:
            segmentation, fields = training_set((held_out,))
            progress(f"fold {held_out}: training phase 2 without its fields")
            train = [f for f in fields if not is_mitos_field(f, (held_out,))]
            model, _ = train_detector(train, segmentation, config, seed=seed, device=device,
                                      on_stage=lambda stage, fold=held_out: progress(f"fold {fold}: {stage}"))
            model.save(fold_dir)
        paths, points = mitos_fields(data, [held_out])
        progress(f"fold {held_out}: detecting on {len(paths)} fields")
        fold = score_fields(fold_dir, model, config, paths, points, device, scratch / f"out-{held_out}")
        report[held_out] = {**fold["pooled"], "threshold": model.config.detector.threshold,
                            "recall_any_score": fold["recall_any_score"]}
        pooled += _counts(fold["pooled"])
        detections |= fold["detections"]
        truth |= fold["truth"]
        per_field += fold["per_field"]
        tissue_mm2 += fold["tissue_mm2"]
        progress(f"fold {held_out}: F1 {fold['pooled']['f1']:.3f}")
    if report["all_folds"]:
        write_csv_atomic(workdir / LOSO_DETECTIONS, ["fold", "field", "x", "y", "score"], _detection_rows(detections))
    report["pooled"] = {**_prf(*pooled), "f1_interval_95": pooled_f1_interval(per_field, seed=seed),
                        "false_per_mm2": pooled[1] / max(tissue_mm2, 1e-9), "tissue_mm2": tissue_mm2}
    sweep = threshold_sweep(detections, truth, MITOS_MPP, radius_um=config.evaluation.radius_um,
                            rule=config.evaluation.match)
    if sweep.best is not None:
        report["oracle"] = {"threshold": float(sweep.best_threshold), "f1": float(sweep.f1[sweep.best])}
    return report


def _detection_rows(detections: dict):
    """One row per detection at any score (level-0 pixels of the field): a LOSO run's raw material, for
    analyses of the scores that need no rerun (benchmarks/score_shift.py)."""
    for name, found in detections.items():
        for (x, y), score in zip(found.points, found.scores):
            yield {"fold": name[:3], "field": name, "x": f"{x:.2f}", "y": f"{y:.2f}", "score": f"{score:.6g}"}


def acceptance_checks(model_dir: Path, model, config: Config, data: Path, seed: int, device, scratch: Path,
                      progress, exclude=(), per_source: int = 100) -> dict:
    """The shipped model's checks (wsimito.acceptance): held-out crops of each source, and the README's
    sample slide, which no training data comes from."""
    checks = {}
    for name, crops in held_out_crops(data, per_source, seed, exclude).items():
        checks[name] = crop_recall(model_dir, model, config, crops, scratch / f"crops-{name}", device)
        progress(f"check {name}: proposed {checks[name]['proposed']:.2f}, detected {checks[name]['detected']:.2f} "
                 f"of {len(crops)} held-out crops")
    checks["sample_slide"] = count_on_slide(model_dir, model, config, SAMPLE_SLIDE, scratch / "sample", device)
    progress(f"check sample slide: {checks['sample_slide']['detections']} detections")
    return checks


class TrainingSets:
    """What phase 2 trains on without some held-out MITOS 2012 slides: the phase-1 model and every image
    with its boxes. Without ``train_seg.field_steps`` phase 1 is the same for all, and the images are
    loaded once; with it, phase 1 is fine-tuned on the other slides' fields (``workdir/segmentation-
    without-<slides>.pt``, or ``segmentation-fields.pt`` for all) and the images are boxed by that model."""

    def __init__(self, args, config: Config, base: Path, segmentation: SegmentationModel, workdir: Path,
                 scratch: Path, progress):
        self.args, self.config, self.base, self.segmentation = args, config, base, segmentation
        self.workdir, self.scratch, self.progress = workdir, scratch, progress
        self.shared = self.crops = None

    def __call__(self, held_out: tuple) -> tuple[SegmentationModel, list[LabelledField]]:
        args, config = self.args, self.config
        if not config.train_seg.field_steps:
            if self.shared is None:
                self.shared = self.segmentation, self._load(self.segmentation)
            return self.shared
        if self.crops is None:
            self.crops = phase1_images(args.data, self.scratch, config, args.seed, args.synthetic_fields,
                                       args.exclude)[0]
        slides = [s for s in MITOS_SLIDES if s not in held_out]
        out = self.workdir / (f"segmentation-without-{'-'.join(held_out)}.pt" if held_out
                              else "segmentation-fields.pt")
        segmentation = phase1_on_fields(self.base, self.crops, args.data, slides, config, out, args.seed,
                                        args.device, self.progress)
        return segmentation, self._load(segmentation)

    def _load(self, segmentation: SegmentationModel) -> list[LabelledField]:
        self.progress("phase 2: loading crops and fields, making boxes")
        return phase2_fields(self.args.data, segmentation, self.config, self.args.device, self.args.boxes,
                             self.args.exclude)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the shared/data folder")
    parser.add_argument("-o", "--output", type=Path, help="bundle directory to write (omit with --loso only)")
    parser.add_argument("--config", type=Path, help="YAML config (configs/default-model.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value (YAML syntax), e.g. detector.proposals=search-fast")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--synthetic-fields", type=int, default=48)
    parser.add_argument("--seg-model", type=Path, help="reuse this phase-1 model instead of training one")
    parser.add_argument("--boxes", choices=["segmentation", "fixed"], default="segmentation",
                        help="label boxes from phase 1, or fixed-size squares (the paper's Table 2 baseline)")
    parser.add_argument("--exclude", nargs="*", default=[], metavar="DATASET",
                        help="source datasets to leave out of training: MIDOG21 or TUPAC16 (AMi-Br crops; MIDOG21's "
                             "images are CC BY-NC-ND), AtNorM-MD")
    parser.add_argument("--loso", action="store_true", help="leave-one-slide-out F1 on MITOS 2012 first")
    parser.add_argument("--folds", nargs="+", choices=MITOS_SLIDES, metavar="SLIDE",
                        help="with --loso, only these held-out slides (A00 A02 A03), to run folds as separate "
                             "processes sharing one --workdir; then once more without --folds to pool them. "
                             "Phase 1 must exist first (--seg-model, or segmentation.pt in --workdir)")
    parser.add_argument("--report", type=Path, help="also write the JSON report here")
    parser.add_argument("--workdir", type=Path,
                        help="keep phase 1 (segmentation.pt and its per-epoch checkpoint), its fine-tunes on "
                             "fields and each fold's model here; a rerun with the "
                             "same folder resumes phase 1 or reuses it when finished")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if not args.output and not args.loso:
        parser.error("give -o/--output, --loso, or both")
    if args.folds and (args.output or not args.loso):
        parser.error("--folds runs some leave-one-slide-out folds: give it with --loso and without -o")
    if args.folds and not (args.seg_model or (args.workdir and (args.workdir / "segmentation.pt").exists())):
        parser.error("--folds needs phase 1 first (--seg-model, or a --workdir where the recipe trained it), so "
                     "that separate processes do not each train it")
    config = load_config(args.config, parse_overrides(args.overrides))
    progress = Progress()
    report = {"seed": args.seed, "boxes": args.boxes, "exclude": args.exclude, "config": config.to_dict()}
    with tempfile.TemporaryDirectory(prefix="wsimito-recipe-") as scratch:
        scratch = Path(scratch)
        workdir = args.workdir or scratch
        workdir.mkdir(parents=True, exist_ok=True)
        if not args.seg_model and (workdir / "segmentation.pt").exists():
            progress(f"phase 1: reusing {workdir / 'segmentation.pt'}")
            args.seg_model = workdir / "segmentation.pt"
        if args.seg_model:
            segmentation = SegmentationModel.load(args.seg_model, args.device)
            if args.loso:
                refuse_field_tuned(args.seg_model, segmentation)
            config = replace(config, tiling=replace(config.tiling, mpp=segmentation.mpp))
        else:
            progress("phase 1: preparing synthetic fields, AMi-Br crops with their masks, PRLAB negatives")
            images, val = phase1_images(args.data, scratch, config, args.seed, args.synthetic_fields, args.exclude)
            checkpoint = workdir / "segmentation.pt.ckpt"
            progress(f"phase 1: training on {len(images)} images, validating on {len(val)}"
                     + (" (resuming from its checkpoint)" if checkpoint.exists() else ""))
            segmentation = train_segmentation(
                images, config, workdir / "segmentation.pt", seed=args.seed, device=args.device,
                resume=checkpoint.exists(), val_images=val,
                on_epoch=lambda e: progress(f"phase 1: epoch {e.epoch}/{e.epochs}, loss {e.loss:.3f}, "
                                            f"validation Dice {e.val_dice:.3f}, pixel F1 {e.val_pixel_f1:.3f}"))
            report["phase1"] = segmentation.info.get("history", [{}])[-1]
        report["phase1_s"] = progress.elapsed
        base = args.seg_model or workdir / "segmentation.pt"
        training_set = TrainingSets(args, config, base, segmentation, workdir, scratch, progress)
        if args.loso:
            report["loso"] = leave_one_slide_out(training_set, config, args.seed, args.device, args.data,
                                                 workdir, scratch, progress, folds=args.folds or MITOS_SLIDES)
        if args.output:
            segmentation, fields = training_set(())
            progress("final model: phase 2 on every image")
            model, phase2 = train_detector(fields, segmentation, config, seed=args.seed, device=args.device,
                                           on_stage=lambda stage: progress(f"final model: {stage}"))
            report["phase2"] = phase2
            report["total_s"] = progress.elapsed
            model.notes = {**model.notes, "recipe": report}
            model.save(args.output)
            report["checks"] = acceptance_checks(args.output, model, config, args.data, args.seed, args.device,
                                                 scratch, progress, args.exclude)
    report["total_s"] = progress.elapsed
    text = json.dumps(report, indent=2, default=float)
    if args.report:
        args.report.write_text(text)
    print(text)
    return report


def parse_overrides(items: list[str]) -> dict:
    """``--set SECTION.KEY=VALUE`` options as load_config's overrides, each value read as YAML."""
    import yaml

    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise SystemExit(f"--set {item!r}: expected SECTION.KEY=VALUE")
        overrides[key] = yaml.safe_load(value)
    return overrides


if __name__ == "__main__":
    main()
