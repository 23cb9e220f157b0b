"""``wsimito info``: what a slide is and what detection would do with it, before any model runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from wsimito.cli.common import HELP_SETTINGS, config_option, mpp_option


@click.command(context_settings=HELP_SETTINGS)
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
