"""The ``wsimito`` command: parse, load the config, call the library, report.

Thin on purpose: everything a command does is a library call that tests and
notebooks can make too. This module owns all printing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from wsimito import __version__
from wsimito.errors import WsimitoError


class _FriendlyGroup(click.Group):
    """Turn errors into one line naming the problem; a traceback only with ``--debug``."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except WsimitoError as exc:
            if ctx.meta.get("wsimito.debug"):
                raise
            click.echo(f"wsimito: error: {exc}", err=True)
            ctx.exit(1)
        except Exception as exc:  # a bug or an environment problem: still one line unless --debug
            if ctx.meta.get("wsimito.debug"):
                raise
            click.echo(f"wsimito: error: {type(exc).__name__}: {exc} (rerun with --debug for details)", err=True)
            ctx.exit(1)


@click.group(cls=_FriendlyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="wsimito")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.pass_context
def main(ctx, debug):
    """Count mitoses in breast-cancer H&E whole-slide images.

    \b
    Start with a look at your slides (format, resolution, tissue, tiles):
        wsimito info slides/*.svs
    Slides whose files carry no resolution need the pixel size in µm:
        wsimito info fields/*.jpg --mpp 0.2456
    Make synthetic H&E with exact ground truth to try things out:
        wsimito synth demo/ --fields 4 --slide 8000
    """
    ctx.meta["wsimito.debug"] = debug


mpp_option = click.option(
    "--mpp",
    type=click.FloatRange(min=0, min_open=True),
    help="Level-0 pixel size in µm/px; overrides the file's (needed when it records none).",
)
config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML config (see configs/default.yaml); its values replace the defaults.",
)


@main.command()
@click.argument("slides", nargs=-1, required=True, type=click.Path(path_type=Path))
@mpp_option
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array, one object per slide.")
def info(slides, mpp, config_path, as_json):
    """Describe SLIDES: reader and format, size, pyramid levels, mpp and where it
    came from, tissue area and how many tiles detection would process.

    Any OpenSlide format (SVS, NDPI, MRXS, SCN, DICOM, generic tiled TIFF, ...),
    other TIFFs, and plain JPEG/PNG/BMP fields. A slide that fails is reported
    and the others go on; the exit code is 1 if any failed.

    \b
    Examples:
        wsimito info wsimito/data/CMU-1-Small-Region.svs
        wsimito info fields/A03_00.jpg --mpp 0.2456 --json
    """
    from wsimito.config import load_config
    from wsimito.inventory import describe_slide

    config = load_config(config_path)
    reports = [describe_slide(path, config, mpp=mpp) for path in slides]
    if as_json:
        click.echo(json.dumps(reports, indent=2))
    else:
        for report in reports:
            _print_info(report)
    if any(report["status"] != "ok" for report in reports):
        sys.exit(1)


def _print_info(report: dict) -> None:
    if report["status"] != "ok":
        click.echo(f"wsimito: error: {report['error']}", err=True)
        return
    width, height = report["width"], report["height"]
    mm_w, mm_h = width * report["mpp_x"] / 1000, height * report["mpp_y"] / 1000
    levels = ", ".join(f"{w}x{h}" for w, h, _ in report["levels"])
    tiling = report["tiling"]
    lines = [
        report["slide"],
        f"  path      {report['path']}",
        f"  reader    {report['reader']} ({report['vendor']})",
        f"  size      {width} x {height} px at level 0 = {mm_w:.2f} x {mm_h:.2f} mm",
        f"  levels    {len(report['levels'])}: {levels}",
        f"  mpp       {report['mpp']:.4g} µm/px, from {report['mpp_source']}",
        f"  tissue    {report['tissue_mm2']:.3f} mm²",
        f"  tiles     {report['tiles']} with tissue of {report['tiles_total']} "
        f"({tiling['tile_size']} px at {tiling['mpp']} µm/px, halo {tiling['halo']})",
    ]
    if report["offset"] != [0, 0]:
        lines.insert(4, f"  offset    {report['offset'][0]}, {report['offset'][1]} (OpenSlide bounds)")
    click.echo("\n".join(lines))


def _device(choice: str) -> str:
    from wsimito.devices import resolve_device

    return str(resolve_device(choice))


device_option = click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Where the network runs; auto takes a CUDA GPU when torch sees one.",
)
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bar or per-epoch lines.")


@main.command("train-seg")
@click.argument("data", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Model file to write (a checkpoint <output>.ckpt is kept beside it).")
@config_option
@click.option("--data-mpp", type=click.FloatRange(min=0, min_open=True),
              help="µm/px of the images when the data set does not record it (MITOS 2012 scanner A: 0.2456).")
@click.option("--epochs", type=click.IntRange(min=1), help="Override train_seg.epochs.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds weights, split, crops, augmentation.")
@click.option("--resume", is_flag=True, help="Continue from <output>.ckpt.")
@device_option
@quiet_option
def train_seg(data, output, config_path, data_mpp, epochs, seed, resume, device, quiet):
    """Train the phase-1 segmentation network on pixel-labelled images in DATA.

    DATA are folders or image files with pixel labels beside them: NAME_mask.png
    (non-zero = mitosis; what `wsimito synth` writes) or a MITOS 2012 pixel-list
    NAME.csv. Images are resampled to the model mpp (tiling.mpp). Per epoch it
    prints the loss and the validation Dice and pixel F1 on held-out images.

    \b
    Examples:
        wsimito synth demo/ --fields 16
        wsimito train-seg demo/ -o seg.pt --config configs/seg-tiny.yaml --epochs 5
        wsimito train-seg mitos2012/ --data-mpp 0.2456 -o seg.pt --resume
    """
    from wsimito.config import load_config
    from wsimito.datasets import find_labelled_images
    from wsimito.train_seg import resample_to_mpp, train_segmentation

    overrides = {"train_seg.epochs": epochs} if epochs else {}
    config = load_config(config_path, overrides)
    items = find_labelled_images(data)
    images = []
    for item in items:
        mpp = item.mpp or data_mpp
        if mpp is None:
            raise click.UsageError(f"{item.image}: the data set records no mpp; pass --data-mpp")
        rgb, mask = item.load()
        images.append(resample_to_mpp(rgb, mask, mpp, config.tiling.mpp))
    device = _device(device)
    if not quiet:
        click.echo(f"training on {len(images)} images at {config.tiling.mpp} µm/px, {device}", err=True)
    with _progress(quiet, "train-seg") as bar:
        def on_epoch(report):
            if not quiet:
                click.echo(
                    f"\nepoch {report.epoch}/{report.epochs}  loss {report.loss:.4f}  lr {report.lr:.2e}  "
                    f"val dice {report.val_dice:.3f}  pixel F1 {report.val_pixel_f1:.3f}  {report.seconds:.1f}s",
                    err=True,
                )

        train_segmentation(images, config, output, seed=seed, device=device, resume=resume,
                           on_step=bar.update_to, on_epoch=on_epoch)
    if not quiet:
        click.echo(f"model written to {output}", err=True)


class _progress:
    """A progress bar on stderr when it is a terminal and not --quiet; silent otherwise."""

    def __init__(self, quiet: bool, label: str):
        self.enabled = not quiet and sys.stderr.isatty()
        self.label = label
        self.bar = None
        self.done = 0

    def __enter__(self):
        return self

    def update_to(self, done: int, total: int, *_):
        if not self.enabled:
            return
        if self.bar is None:
            self.bar = click.progressbar(length=total, label=self.label, file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(done - self.done)
        self.done = done

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)


@main.command("make-boxes")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--points", "points_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Point labels: CSV with columns image,x,y (image = file name without extension).")
@click.option("--seg-model", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Segmentation model from train-seg (needed unless --mode fixed).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Boxes CSV to write.")
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
    from wsimito.labels import BOX_COLUMNS
    from wsimito.labels import make_boxes as boxes_for
    from wsimito.outputs.tables import write_csv_atomic
    from wsimito.segmentation import SegmentationModel
    from wsimito.slide import open_slide

    if mode == "segmentation" and seg_model is None:
        raise click.UsageError("--seg-model is required with --mode segmentation")
    config = load_config(config_path)
    device = _device(device)
    model = SegmentationModel.load(seg_model, device) if mode == "segmentation" else None
    points = read_centroid_csv(points_path)
    rows, failed = [], 0
    stems = {Path(p).stem for p in images}
    for path in images:
        try:
            with open_slide(path, mpp=mpp) as slide:
                found = boxes_for(slide, Path(path).stem, points.get(Path(path).stem, []), config.boxes, model, mode, device)
        except WsimitoError as exc:
            click.echo(f"wsimito: error: {exc}", err=True)
            failed += 1
            continue
        rows.extend(vars(box) for box in found)
    write_csv_atomic(output, BOX_COLUMNS, rows)
    total = sum(len(points.get(stem, [])) for stem in stems)
    by_source = {s: sum(r["source"] == s for r in rows) for s in ("segmentation", "fallback")}
    unused = sum(len(v) for k, v in points.items() if k not in stems)
    click.echo(
        f"{total} points on {len(images) - failed} images: {by_source['segmentation']} segmentation, "
        f"{by_source['fallback']} fallback, {total - len(rows)} dropped"
        + (f" ({unused} points in {points_path.name} belong to images not given)" if unused else "")
        + f" -> {output}"
    )
    if failed:
        sys.exit(1)


@main.command("train-det")
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
    from wsimito.train_det import load_fields, train_detector
    from wsimito.segmentation import SegmentationModel

    if (boxes_path is None) == (points_path is None):
        raise click.UsageError("give exactly one of --boxes or --points")
    config = load_config(config_path, {"detector.epochs": epochs} if epochs else {})
    device = _device(device)
    segmentation = SegmentationModel.load(seg_model, device)
    if abs(segmentation.mpp - config.tiling.mpp) > 1e-6:
        config = load_config(config_path, {"tiling.mpp": segmentation.mpp, **({"detector.epochs": epochs} if epochs else {})})
    fields = load_fields(images, config, segmentation, mpp=mpp, boxes_path=boxes_path, points_path=points_path,
                         device=device)
    say = (lambda text: None) if quiet else (lambda text: click.echo(text, err=True))
    say(f"training on {len(fields)} images ({sum(len(f.boxes) for f in fields)} label boxes) at {config.tiling.mpp} µm/px, {device}")

    def on_epoch(epoch, total, loss, f1):
        say(f"epoch {epoch}/{total}  loss {loss:.4f}  val F1 (CNN) {f1:.3f}")

    model, report = train_detector(fields, segmentation, config, seed=seed, device=device, on_epoch=on_epoch,
                                   on_stage=lambda text: say(text + " ..."))
    model.save(output)
    if "val_f1" in report:
        say(f"validation ({report['val_images']} images): F1 {report['val_f1']:.3f} at threshold "
            f"{report['val_threshold']}; best F1 {report['val_best_f1']:.3f} at {report['val_best_threshold']:.3f}")
    say(f"detector written to {output}")


def _parse_shard(value):
    if value is None:
        return None
    try:
        index, count = (int(part) for part in value.split("/"))
    except ValueError:
        raise click.BadParameter("use I/N, e.g. 0/4 for the first of four shards") from None
    if not 0 <= index < count:
        raise click.BadParameter(f"shard index must be in 0..{count - 1}, got {index}")
    return index, count


@main.command()
@click.argument("slides", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (created): per slide .zarr, .geojson, .overlay.png; counts.csv, detections.csv.")
@click.option("--model", "model_path", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Detector bundle from train-det. Default: the model shipped with wsimito.")
@config_option
@device_option
@mpp_option
@click.option("--threshold", type=click.FloatRange(0, 1), help="Calibrated score for a detection to count. "
              "Default: the model's own threshold.")
@click.option("--workers", type=click.IntRange(min=1), default=4, show_default=True,
              help="Threads reading tiles (the model itself runs one batch at a time per device).")
@click.option("--shard", callback=lambda ctx, param, value: _parse_shard(value), metavar="I/N",
              help="Process only shard I of N (a stable split by slide name; for SLURM arrays).")
@click.option("--overwrite", is_flag=True, help="Redo slides whose outputs are already complete.")
@click.option("--scheduler", metavar="ADDRESS",
              help="Run on an existing Dask cluster (tcp://HOST:PORT or a scheduler JSON file): one task per slide, "
                   "GPU workers declared with `--resources GPU=1`.")
@click.option("--cluster", type=click.Choice(["slurm"]),
              help="Start Dask workers as SLURM jobs (dask-jobqueue) as the config's 'cluster' section says, "
                   "and run there; they are stopped at the end.")
@quiet_option
def detect(slides, output, model_path, config_path, device, mpp, threshold, workers, shard, overwrite, scheduler,
           cluster, quiet):
    """Detect and count mitoses in SLIDES; write QuPath, Zarr and CSV outputs to OUTPUT.

    For each slide: <slide>.geojson (detections and the hotspot, for QuPath's
    File > Import objects), <slide>.zarr (probability map pyramid, detections,
    provenance), <slide>.overlay.png (a quick look). For the batch: counts.csv
    (one row per slide: mitoses, tissue mm², density, hotspot, mitotic score,
    status) and detections.csv (one row per mitosis, level-0 pixels).

    A slide that fails gets status=error and the reason in counts.csv; the rest
    go on and the exit code is 1. Rerunning skips slides already complete, so a
    killed run is finished by running the same command again.

    Runs that share an output folder never work on the same slide at once: a
    slide another run is processing (a lock file .<slide>.lock names it) is
    left for last, then its finished result is taken; a message says so.

    With --shard I/N (one task of a SLURM array, see slurm/README.md) the
    tables are counts.shard-I-of-N.csv and detections.shard-I-of-N.csv;
    `wsimito merge-reports OUTPUT` joins them. With --scheduler or --cluster
    each slide is a task on a Dask cluster; slide and output paths must be
    readable there (shared storage) and --workers is per slide on a worker.

    \b
    Examples:
        wsimito detect slides/*.svs -o out/
        wsimito detect fields/*.jpg --mpp 0.2456 -o out/ --model detector/
        wsimito detect slides/*.svs -o out/ --shard 0/8     # one task of a SLURM array
        wsimito detect slides/*.svs -o out/ --scheduler tcp://10.0.0.5:8786
        wsimito detect slides/*.svs -o out/ --cluster slurm --config site.yaml
    """
    from wsimito.config import load_config
    from wsimito.model import MitosisModel, bundle_sha256
    from wsimito.pipeline import run_batch
    from wsimito.weights import default_model_path

    if scheduler and cluster:
        raise click.UsageError("give --scheduler or --cluster, not both")
    config = load_config(config_path)
    model_path = model_path or default_model_path()
    sha256 = bundle_sha256(model_path)
    say = (lambda text: None) if quiet else (lambda text: click.echo(f"wsimito: {text}", err=True))
    note = lambda text: click.echo(f"wsimito: {text}", err=True)  # noqa: E731  (waits for other runs: even if quiet)
    if scheduler or cluster:
        from wsimito.cluster import cluster_runner

        model = MitosisModel.load(model_path, "cpu")  # here only for its threshold and a check of the files
        threshold = model.config.detector.threshold if threshold is None else threshold

        def on_result(done, total, result):
            say(f"slide {done}/{total} done: {result.slide} ({result.status})")

        with cluster_runner(model_path, config, device, scheduler=scheduler, cluster=cluster) as (runner, device):
            say(f"running on {scheduler or 'a SLURM Dask cluster'}, device {device}")
            results = run_batch(slides, output, None, sha256, config, threshold, device, workers, mpp=mpp,
                                shard=shard, overwrite=overwrite, on_note=note, on_result=on_result, runner=runner)
    else:
        device = _device(device)
        model = MitosisModel.load(model_path, device)
        threshold = model.config.detector.threshold if threshold is None else threshold
        bars = _SlideProgress(quiet)
        results = run_batch(slides, output, model, sha256, config, threshold, device, workers, mpp=mpp, shard=shard,
                            overwrite=overwrite, on_slide=bars.slide, on_tiles=bars.tiles, on_note=note)
        bars.close()
    failed = [r for r in results if r.status != "ok"]
    for result in failed:
        click.echo(f"wsimito: error: {result.error}", err=True)
    if not quiet:
        total = sum(len(r.table) for r in results)
        tables = "counts.csv" if shard is None else f"counts.shard-{shard[0]}-of-{shard[1]}.csv"
        click.echo(f"{len(results) - len(failed)} of {len(results)} slides done, {total} mitoses -> {output}/{tables}",
                   err=True)
    if failed:
        sys.exit(1)


class _SlideProgress:
    """'slide i/n: name' lines and a per-slide tile bar on a terminal; nothing with --quiet or when piped."""

    def __init__(self, quiet: bool):
        self.enabled = not quiet
        self.bar = _progress(quiet, "")

    def slide(self, index, total, name):
        if self.enabled:
            self.close()
            self.bar = _progress(False, f"{name} tiles")
            click.echo(f"slide {index + 1}/{total}: {name}", err=True)

    def tiles(self, done, total):
        self.bar.update_to(done, total)

    def close(self):
        self.bar.__exit__(None, None, None)
        self.bar.bar = None


def _register_commands():
    """Commands that live in their own modules."""
    from wsimito.cli_bench import bench
    from wsimito.cli_evaluate import evaluate
    from wsimito.cli_reports import merge_reports
    from wsimito.cli_synth import synth

    main.add_command(evaluate)
    main.add_command(merge_reports)
    main.add_command(synth)
    main.add_command(bench)


_register_commands()
