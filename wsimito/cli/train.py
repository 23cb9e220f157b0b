"""``wsimito train-seg``, ``make-boxes`` and ``train-det``: the paper's two training phases and the step between.

Phase 1 learns to segment mitoses from pixel labels; make-boxes turns point labels into boxes with it;
phase 2 trains the R-CNN detector on those boxes and writes the bundle ``detect`` uses.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from wsimito.cli.common import (
    HELP_SETTINGS,
    Progress,
    config_option,
    device_option,
    mpp_option,
    quiet_option,
    resolve_device,
    stderr_lines,
)


@click.command("train-seg", context_settings=HELP_SETTINGS)
@click.argument("data", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Model file to write (a checkpoint <output>.ckpt is kept beside it).")
@config_option
@click.option("--data-mpp", type=click.FloatRange(min=0, min_open=True),
              help="µm/px of the images when the data set does not record it (MITOS 2012 scanner A: 0.2456).")
@click.option("--masks", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of masks NAME.png, one per image NAME of DATA (searched recursively), instead of masks "
                   "beside the images; only images with a mask there are used.")
@click.option("--val-masks", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Like --masks, for the images to validate on (a split by source slide), instead of a random "
                   "train_seg.val_fraction of the training images.")
@click.option("--epochs", type=click.IntRange(min=1), help="Override train_seg.epochs.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds weights, split, crops, augmentation.")
@click.option("--resume", is_flag=True, help="Continue from <output>.ckpt.")
@device_option
@quiet_option
def train_seg(data, output, config_path, data_mpp, masks, val_masks, epochs, seed, resume, device, quiet):
    """Train the phase-1 segmentation network on pixel-labelled images in DATA.

    DATA are folders or image files with pixel labels beside them: NAME_mask.png
    (non-zero = mitosis; what `wsimito synth` writes) or a MITOS 2012 pixel-list
    NAME.csv, or in a folder of their own (--masks). Images are resampled to
    the model mpp (tiling.mpp). Per epoch it prints the loss and the
    validation Dice and pixel F1 on held-out images (--val-masks chooses them).

    \b
    Examples:
        wsimito synth demo/ --fields 16
        wsimito train-seg demo/ -o seg.pt --config configs/seg-tiny.yaml --epochs 5
        wsimito train-seg mitos2012/ --data-mpp 0.2456 -o seg.pt --resume
        wsimito train-seg ami-br-patches/patches/normal ami-br-patches/patches/atypical --data-mpp 0.25 \
            --masks ami-br-masks/Train --val-masks ami-br-masks/Test -o seg.pt
    """
    from wsimito.config import load_config
    from wsimito.datasets import find_labelled_images
    from wsimito.resample import resample_to_mpp
    from wsimito.train_seg import train_segmentation

    overrides = {"train_seg.epochs": epochs} if epochs else {}
    config = load_config(config_path, overrides)
    def load(items):
        images = []
        for item in items:
            mpp = item.mpp or data_mpp
            if mpp is None:
                raise click.UsageError(f"{item.image}: the data set records no mpp; pass --data-mpp")
            rgb, mask = item.load()
            images.append(resample_to_mpp(rgb, mask, mpp, config.tiling.mpp))
        return images

    images = load(find_labelled_images(data, masks))
    val = load(find_labelled_images(data, val_masks)) if val_masks else None
    device = resolve_device(device)
    say = stderr_lines(quiet)
    say(f"training on {len(images)} images at {config.tiling.mpp} µm/px, {device}"
        + (f", validating on {len(val)}" if val is not None else ""))
    with Progress(quiet, "train-seg") as bar:
        def on_epoch(report):
            say(f"\nepoch {report.epoch}/{report.epochs}  loss {report.loss:.4f}  lr {report.lr:.2e}  "
                f"val dice {report.val_dice:.3f}  pixel F1 {report.val_pixel_f1:.3f}  {report.seconds:.1f}s")

        train_segmentation(images, config, output, seed=seed, device=device, resume=resume,
                           on_step=bar.update_to, on_epoch=on_epoch, val_images=val)
    say(f"model written to {output}")


@click.command("make-boxes", context_settings=HELP_SETTINGS)
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--points", "points_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Point labels: CSV with columns image,x,y (image = file name without extension).")
@click.option("--seg-model", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Segmentation model from train-seg (needed unless --mode fixed).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Boxes CSV to write.")
@click.option("--mode", type=click.Choice(["segmentation", "fixed"]), default="segmentation", show_default=True,
              help="fixed: a square of boxes.fallback_size_um around every point, no segmentation.")
@mpp_option
@config_option
@device_option
def make_boxes(images, points_path, seg_model, output, mode, mpp, config_path, device):
    """Turn point labels on IMAGES into boxes (phase 1 of the paper).

    Around each point the segmentation model segments a window; the box is the
    bounding rectangle of the segmented region that contains the point. A point
    no region contains gets the fallback from the config (a fixed square in µm,
    or dropped). Writes image,x,y,x0,y0,x1,y1,source (level-0 pixels; source is
    segmentation or fallback) and prints how many of each.

    \b
    Examples:
        wsimito make-boxes fields/*.jpg --mpp 0.2456 --points centroids.csv --seg-model seg.pt -o boxes.csv
        wsimito make-boxes fields/*.jpg --mpp 0.2456 --points centroids.csv --mode fixed -o boxes.csv
    """
    from wsimito.config import load_config
    from wsimito.datasets.points import read_centroid_csv
    from wsimito.labels import boxes_for_images, write_boxes_csv
    from wsimito.segmentation import SegmentationModel

    if mode == "segmentation" and seg_model is None:
        raise click.UsageError("--seg-model is required with --mode segmentation")
    config = load_config(config_path)
    device = resolve_device(device)
    model = SegmentationModel.load(seg_model, device) if mode == "segmentation" else None
    report = boxes_for_images(images, read_centroid_csv(points_path), config.boxes, model, mode, device, mpp=mpp)
    for error in report.errors:
        click.echo(f"wsimito: error: {error}", err=True)
    write_boxes_csv(output, report.boxes)
    click.echo(
        f"{report.points} points on {report.images} images: {report.count('segmentation')} segmentation, "
        f"{report.count('fallback')} fallback, {report.dropped} dropped"
        + (f" ({report.unused} points in {points_path.name} belong to images not given)" if report.unused else "")
        + f" -> {output}"
    )
    if report.errors:
        sys.exit(1)


@click.command("train-det", context_settings=HELP_SETTINGS)
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--boxes", "boxes_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Boxes from make-boxes (image,x,y,x0,y0,x1,y1,source).")
@click.option("--points", "points_path", type=click.Path(exists=True, path_type=Path),
              help="Point labels instead of boxes, in any format `wsimito evaluate --truth` reads; "
                   "boxes are then made on the fly as make-boxes would.")
@click.option("--seg-model", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Phase-1 model from train-seg: gives the proposals and goes into the bundle.")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the detector bundle (segmentation.pt, rcnn.pt, model.json).")
@mpp_option
@config_option
@click.option("--epochs", type=click.IntRange(min=1), help="Override detector.epochs (CNN fine-tuning).")
@click.option("--seed", type=int, default=0, show_default=True)
@device_option
@quiet_option
def train_det(images, boxes_path, points_path, seg_model, output, mpp, config_path, epochs, seed, device, quiet):
    """Train the phase-2 R-CNN detector on IMAGES with label boxes, and save the bundle `detect` uses.

    Proposals come from the segmentation model (detector.proposals in the config
    chooses segmentation or selective search). A share of the images
    (detector.val_fraction) is held out: each epoch prints the loss and the
    validation F1 at evaluation.radius_um, and the end the final F1 and the
    F1-best threshold.

    \b
    Examples:
        wsimito make-boxes fields/*.png --points centroids.csv --seg-model seg.pt -o boxes.csv
        wsimito train-det fields/*.png --boxes boxes.csv --seg-model seg.pt -o detector/
        wsimito train-det fields/*.jpg --mpp 0.2456 --points centroids.csv --seg-model seg.pt -o detector/
    """
    from wsimito.config import load_config
    from wsimito.segmentation import SegmentationModel
    from wsimito.train_det import load_fields, train_detector

    if (boxes_path is None) == (points_path is None):
        raise click.UsageError("give exactly one of --boxes or --points")
    overrides = {"detector.epochs": epochs} if epochs else {}
    config = load_config(config_path, overrides)
    device = resolve_device(device)
    segmentation = SegmentationModel.load(seg_model, device)
    if abs(segmentation.mpp - config.tiling.mpp) > 1e-6:
        config = load_config(config_path, {"tiling.mpp": segmentation.mpp, **overrides})
    fields = load_fields(images, config, segmentation, mpp=mpp, boxes_path=boxes_path, points_path=points_path,
                         device=device)
    say = stderr_lines(quiet)
    say(f"training on {len(fields)} images ({sum(len(f.boxes) for f in fields)} label boxes) "
        f"at {config.tiling.mpp} µm/px, {device}")

    def on_epoch(epoch, total, loss, f1):
        say(f"epoch {epoch}/{total}  loss {loss:.4f}  val F1 (CNN) {f1:.3f}")

    model, report = train_detector(fields, segmentation, config, seed=seed, device=device, on_epoch=on_epoch,
                                   on_stage=lambda text: say(text + " ..."))
    model.save(output)
    if "val_f1" in report:
        say(f"validation ({report['val_images']} images): F1 {report['val_f1']:.3f} at threshold "
            f"{report['val_threshold']}; best F1 {report['val_best_f1']:.3f} at {report['val_best_threshold']:.3f}")
    say(f"detector written to {output}")
