"""``wsimito synth``: synthetic H&E with exact ground truth (see wsimito.synth)."""

from __future__ import annotations

from pathlib import Path

import click

from wsimito.cli.common import HELP_SETTINGS


def _size(ctx, param, value):
    if value is None:
        return None
    try:
        parts = [int(v) for v in value.lower().split("x")]
    except ValueError:
        raise click.BadParameter("use N or HxW in pixels, e.g. 20000 or 15000x20000") from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 256:
        raise click.BadParameter("use N or HxW, each at least 256 pixels")
    return tuple(parts)


@click.command(context_settings=HELP_SETTINGS)
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--fields", type=click.IntRange(min=0), default=8, show_default=True,
              help="High-power fields to write (PNG + mask PNG + centroids.csv).")
@click.option("--field-size", type=click.IntRange(min=64), default=1024, show_default=True, help="Field side, pixels.")
@click.option("--mitoses-per-field", type=click.IntRange(min=0), help="Exact count per field (default: drawn).")
@click.option("--slide", "slide_size", callback=_size, metavar="N|HxW",
              help="Also write a pyramidal tiled TIFF slide of this size (tile by tile, bounded memory).")
@click.option("--flavour", type=click.Choice(["generic", "aperio"]), default="generic", show_default=True,
              help="generic: mpp in TIFF resolution tags; aperio: an Aperio-style description (opens as SVS).")
@click.option("--mitoses-per-mm2", type=click.FloatRange(min=0), default=3.0, show_default=True,
              help="Mitosis density in the slide's tissue.")
@click.option("--pen", is_flag=True, help="Draw marker-pen strokes on the slide.")
@click.option("--border", is_flag=True, help="Add a black scanner border strip to the slide.")
@click.option("--mpp", type=click.FloatRange(min=0.05, max=2.0), default=0.25, show_default=True,
              help="µm per pixel of everything written.")
@click.option("--seed", type=int, default=0, show_default=True, help="The same seed writes the same files.")
def synth(out_dir, fields, field_size, mitoses_per_field, slide_size, flavour, mitoses_per_mm2, pen, border, mpp, seed):
    """Write synthetic H&E with exact ground truth into OUT_DIR, for tests, demos and benchmarks.

    Fields: field_NNN.png, field_NNN_mask.png (mitosis pixels), centroids.csv
    (image,x,y) and fields.json, ready for train-seg, make-boxes and evaluate.
    Slide: synthetic.tiff with synthetic.mitoses.csv (x,y at level 0),
    synthetic.tissue.png and synthetic.truth.json.

    \b
    Examples:
        wsimito synth demo/ --fields 16
        wsimito synth demo/ --fields 0 --slide 20000 --pen
        wsimito synth demo/ --fields 0 --slide 8000x12000 --flavour aperio --mpp 0.5
    """
    from wsimito.synth import write_fields, write_slide

    out_dir.mkdir(parents=True, exist_ok=True)
    if fields:
        write_fields(out_dir, n=fields, size=field_size, mpp=mpp, seed=seed, n_mitoses=mitoses_per_field)
        click.echo(f"{fields} fields ({field_size} px, {mpp} µm/px) -> {out_dir}/field_*.png, centroids.csv")
    if slide_size:
        path = out_dir / ("synthetic.svs" if flavour == "aperio" else "synthetic.tiff")
        truth = write_slide(path, size=slide_size, mpp=mpp, seed=seed, flavour=flavour,
                            mitoses_per_mm2=mitoses_per_mm2, pen=pen, border=border)
        click.echo(f"slide {slide_size[1]}x{slide_size[0]} px, {len(truth.mitoses)} mitoses in "
                   f"{truth.tissue_area_mm2:.2f} mm² of tissue -> {path}")
