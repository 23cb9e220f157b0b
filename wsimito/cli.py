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
