"""``wsimito detect``: count mitoses in slides, locally or on a Dask cluster (see wsimito.pipeline)."""

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


def _parse_shard(ctx, param, value):
    if value is None:
        return None
    try:
        index, count = (int(part) for part in value.split("/"))
    except ValueError:
        raise click.BadParameter("use I/N, e.g. 0/4 for the first of four shards") from None
    if not 0 <= index < count:
        raise click.BadParameter(f"shard index must be in 0..{count - 1}, got {index}")
    return index, count


@click.command(context_settings=HELP_SETTINGS)
@click.argument("slides", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (created): per slide .zarr, .geojson, .overlay.png, .gallery.png; counts.csv, "
                   "detections.csv, index.html.")
@click.option("--model", "model_path", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Detector bundle from train-det. Default: the model shipped with wsimito.")
@config_option
@device_option
@mpp_option
@click.option("--whole-image", is_flag=True,
              help="Treat the whole image as tissue (tissue.whole): for ROI crops and patches, which the tissue "
                   "mask finds too small to keep. The density is then per image area.")
@click.option("--threshold", type=click.FloatRange(0, 1), help="Calibrated score for a detection to count. "
              "Default: detector.threshold of --config, else the model's own threshold.")
@click.option("--workers", type=click.IntRange(min=1), default=4, show_default=True,
              help="Threads reading tiles (the model itself runs one batch at a time per device).")
@click.option("--shard", callback=_parse_shard, metavar="I/N",
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
           cluster, quiet, whole_image):
    """Detect and count mitoses in SLIDES; write QuPath, Zarr and CSV outputs to OUTPUT.

    For each slide: <slide>.geojson (detections and the hotspot, for QuPath's
    File > Import objects), <slide>.zarr (probability map pyramid, detections,
    provenance), <slide>.overlay.png (a quick look), <slide>.gallery.png (the
    best candidates as crops with their scores: are they mitoses?). For the
    batch: counts.csv (one row per slide: mitoses, tissue mm², density,
    hotspot, mitotic score, status), detections.csv (one row per mitosis,
    level-0 pixels) and index.html (the batch on one page, for a browser).

    A slide that fails gets status=error and the reason in counts.csv; the rest
    go on and the exit code is 1. So too for status=partial (tiles the reader
    could not produce: counts and density cover the tissue examined, the
    unread tissue is in unread_mm2) and status=no-tissue (nothing examined:
    for a crop or patch, --whole-image). Rerunning skips slides already
    complete, so a killed run is finished by running the same command again.

    The model's settings come with the model (its bundle): --config may set
    what a run decides (tissue, tiling.tile_size and halo, the threshold,
    detector.duplicate_radius_um, clinical, cluster), and a config that gives
    a model setting (segmentation, train_seg, boxes, the rest of detector,
    tiling.mpp) other than the bundle's is refused before any slide is read.

    Runs that share an output folder never work on the same slide at once: a
    slide another run is processing (a lock file .<slide>.lock names it) is
    left for last, then its finished result is taken; a message says so.

    With --shard I/N (one task of a SLURM array, see slurm/README.md) the
    tables are counts.shard-I-of-N.csv and detections.shard-I-of-N.csv;
    `wsimito merge-reports OUTPUT` joins them and writes index.html. With
    --scheduler or --cluster each slide is a task on a Dask cluster; slide and
    output paths must be readable there (shared storage) and --workers is per
    slide on a worker.

    \b
    Examples:
        wsimito detect slides/*.svs -o out/
        wsimito detect fields/*.jpg --mpp 0.2456 -o out/ --model detector/
        wsimito detect slides/*.svs -o out/ --shard 0/8     # one task of a SLURM array
        wsimito detect slides/*.svs -o out/ --scheduler tcp://10.0.0.5:8786
        wsimito detect slides/*.svs -o out/ --cluster slurm --config site.yaml
    """
    from wsimito.bundle import MitosisModel, bundle_sha256
    from wsimito.config import given_keys, load_config
    from wsimito.model_settings import check_model_settings, run_threshold
    from wsimito.pipeline import check_settings, run_batch
    from wsimito.weights import default_model_path

    if scheduler and cluster:
        raise click.UsageError("give --scheduler or --cluster, not both")
    overrides = {"tissue.whole": True} if whole_image else None
    config, given = load_config(config_path, overrides), given_keys(config_path, overrides)
    model_path = model_path or default_model_path()
    asked = threshold

    def checked(model):
        """The run's threshold, once the config asks for no model setting the bundle does not have."""
        check_model_settings(model, config, given, model_path, config_path or "the options")
        return run_threshold(model, config, given, asked)

    sha256 = bundle_sha256(model_path)
    say = stderr_lines(quiet, "wsimito: ")
    note = stderr_lines(False, "wsimito: ")  # waits for other runs: shown even with --quiet
    if scheduler or cluster:
        from wsimito.cluster import cluster_runner

        model = MitosisModel.load(model_path, "cpu")  # here only for its settings and a check of the files
        threshold = checked(model)
        check_settings(model, config, threshold)  # before a cluster starts (run_batch does it with a model)

        def on_result(done, total, result):
            say(f"slide {done}/{total} done: {result.slide} ({result.status})")

        with cluster_runner(model_path, config, device, scheduler=scheduler, cluster=cluster) as (runner, device):
            say(f"running on {scheduler or 'a SLURM Dask cluster'}, device {device}")
            results = run_batch(slides, output, None, sha256, config, threshold, device, workers, mpp=mpp,
                                shard=shard, overwrite=overwrite, on_note=note, on_result=on_result, runner=runner)
    else:
        device = resolve_device(device)
        model = MitosisModel.load(model_path, device)
        threshold = checked(model)
        bars = _SlideProgress(quiet)
        results = run_batch(slides, output, model, sha256, config, threshold, device, workers, mpp=mpp, shard=shard,
                            overwrite=overwrite, on_slide=bars.slide, on_tiles=bars.tiles, on_note=note)
        bars.close()
    failed = [r for r in results if r.status != "ok"]
    for result in failed:
        click.echo(f"wsimito: {'error' if result.status == 'error' else result.status}: {result.error}", err=True)
    if not quiet:
        total = sum(len(r.table) for r in results)
        click.echo(f"{len(results) - len(failed)} of {len(results)} slides done, {total} mitoses; outputs in "
                   f"{output}/:\n" + _where(shard), err=True)
    if failed:
        sys.exit(1)


def _where(shard) -> str:
    """What a run leaves in its output folder, one line each: a first user learns where to look."""
    from wsimito.reports import table_names

    counts, detections = table_names(shard)
    page = ("index.html      the batch on one page: open it in a browser" if shard is None else
            "index.html      written by `wsimito merge-reports` once all shards are done")
    return "\n".join(f"  {line}" for line in (
        page,
        f"{counts:<15} one row per slide: status, count, tissue mm², density, hotspot, mitotic score",
        f"{detections:<15} one row per counted mitosis (level-0 pixels)",
        "per slide       <slide>.geojson (QuPath), .overlay.png, .gallery.png (best candidates), .zarr"))


class _SlideProgress:
    """'slide i/n: name' lines and a per-slide tile bar on a terminal; nothing with --quiet or when piped."""

    def __init__(self, quiet: bool):
        self.enabled = not quiet
        self.bar = Progress(quiet, "")

    def slide(self, index, total, name):
        if self.enabled:
            self.close()
            self.bar = Progress(False, f"{name} tiles")
            click.echo(f"slide {index + 1}/{total}: {name}", err=True)

    def tiles(self, done, total):
        self.bar.update_to(done, total)

    def close(self):
        self.bar.close()
