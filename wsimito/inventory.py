"""What ``wsimito info`` reports about a slide, as a plain JSON-ready dict.

A failure becomes a row with ``status="error"`` so one bad file never stops a batch.
"""

from __future__ import annotations

from pathlib import Path

from wsimito.config import Config
from wsimito.errors import WsimitoError
from wsimito.slide import open_slide
from wsimito.tiling import tile_grid
from wsimito.tissue import detect_tissue


def describe_slide(path, config: Config = Config(), mpp: float | None = None) -> dict:
    """Format, geometry, resolution and its source, tissue area and tile counts of one slide."""
    path = Path(path)
    report = {"slide": path.stem, "path": str(path), "status": "ok", "error": ""}
    try:
        with open_slide(path, mpp=mpp) as slide:
            tissue = detect_tissue(slide, config.tissue)
            width, height = slide.dimensions
            report.update(
                reader=slide.reader,
                vendor=slide.vendor,
                width=width,
                height=height,
                offset=list(slide.offset),
                levels=[[w, h, ds] for (w, h), ds in zip(slide.level_dimensions, slide.level_downsamples)],
                mpp=slide.mpp,
                mpp_x=slide.resolution.mpp_x,
                mpp_y=slide.resolution.mpp_y,
                mpp_source=slide.mpp_source,
                tissue_mm2=round(tissue.area_mm2, 4),
                tiles=len(tile_grid(slide, config.tiling, tissue)),
                tiles_total=len(tile_grid(slide, config.tiling)),
                tiling=config.to_dict()["tiling"],
            )
    except WsimitoError as exc:
        report.update(status="error", error=str(exc))
    except Exception as exc:  # an unexpected reader failure on this file only
        report.update(status="error", error=f"{path}: {type(exc).__name__}: {exc}")
    return report
