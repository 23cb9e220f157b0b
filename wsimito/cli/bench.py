"""``wsimito bench``: measure the pipeline against the model-only limit (see wsimito.bench)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from wsimito.cli.common import HELP_SETTINGS, device_option, resolve_device


@click.command(context_settings=HELP_SETTINGS)
@device_option
@click.option("--slide", "slide_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Measure on this slide instead of a synthetic one.")
@click.option("--size", type=click.IntRange(min=512), default=8192, show_default=True,
              help="Side in pixels of the synthetic slide (0.25 µm/px).")
@click.option("--quick", is_flag=True, help="A small slide and few tiles: seconds, for a smoke test.")
@click.option("--model", "model_path", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Detector bundle. Default: the model shipped with wsimito.")
@click.option("--workers", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with every measurement.")
def bench(device, slide_path, size, quick, model_path, workers, as_json):
    """Measure model-only and whole-pipeline throughput on one slide, in one run.

    Prints model_tiles_per_s (the limit), read_mpx_per_s (reading alone),
    pipeline_tiles_per_s (what `detect` does) and their ratio, efficiency,
    with peak memory. Speed goals are measured here, never asserted by tests.

    \b
    Examples:
        wsimito bench --quick --json
        wsimito bench --device cuda --size 20000
        wsimito bench --slide wsimito/data/CMU-1-Small-Region.svs
    """
    from wsimito.bench import run_bench
    from wsimito.bundle import MitosisModel, bundle_sha256
    from wsimito.config import load_config
    from wsimito.weights import default_model_path

    device = resolve_device(device)
    model_path = model_path or default_model_path()
    model = MitosisModel.load(model_path, device)
    size = min(size, 4096) if quick else size
    result = run_bench(model, bundle_sha256(model_path), load_config(None), slide_path, size, device, workers, quick,
                       on_stage=lambda text: click.echo(f"bench: {text} ...", err=True))
    if as_json:
        click.echo(json.dumps(result))
        return
    for key, value in result.items():
        click.echo(f"{key:22s} {value:.3f}" if isinstance(value, float) else f"{key:22s} {value}")
