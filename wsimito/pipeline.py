"""``wsimito detect``: one slide as a Dask graph of tile batches, and the batch driver around it.

Per slide: tissue mask -> tissue tiles at the model mpp -> batches read in
parallel threads (Dask's threaded scheduler, a bounded wave of batches at a
time so memory does not grow with slide size) -> one model worker per device
(a lock: tiles are read while the model runs) -> detections kept in each
tile's core, mapped to level-0 coordinates, merged across borders by a radius
in µm -> Zarr, GeoJSON, overlay PNG, and rows for the batch CSVs.

A slide is done when its Zarr store is complete and its GeoJSON and overlay
exist; every file is written under a temporary name and renamed, so a run
killed at any moment is finished by rerunning it.
"""

from __future__ import annotations

import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import dask
import numpy as np
import zarr

from wsimito import __version__
from wsimito.clinical import slide_summary
from wsimito.config import Config, TilingConfig
from wsimito.errors import WsimitoError
from wsimito.model import MitosisModel, detect_tiles
from wsimito.outputs.geojson import detection_features, hotspot_feature, write_geojson
from wsimito.outputs.overlay import write_overlay
from wsimito.outputs.tables import write_csv_atomic
from wsimito.outputs.zarr_store import SlideStore, is_complete
from wsimito.slide import open_slide
from wsimito.stitch import COLUMNS, merge_duplicates, tile_to_slide
from wsimito.tiling import tile_grid
from wsimito.tissue import detect_tissue

COUNT_COLUMNS = [
    "slide", "status", "mitoses", "tissue_mm2", "mitoses_per_mm2", "mpp", "mpp_source", "threshold",
    "runtime_s", "error", "hotspot_count", "hotspot_per_mm2", "hotspot_mm2", "hotspot_shape", "hotspot_x",
    "hotspot_y", "hotspot_fits", "hotspot_note", "mitoses_per_10_hpf", "field_diameter_mm", "mitotic_score",
    "tiles", "model_sha256", "path",
]
DETECTION_COLUMNS = ["slide", "x", "y", "score", "x0", "y0", "x1", "y1"]
_OVERLAY_MPP = 16.0


@dataclass
class SlideResult:
    slide: str
    path: str
    status: str  # ok | error
    table: np.ndarray = field(default_factory=lambda: np.zeros((0, len(COLUMNS))))  # above threshold
    row: dict = field(default_factory=dict)  # the counts.csv row

    @property
    def error(self) -> str:
        return self.row.get("error", "")


def slide_id(path) -> str:
    return Path(path).stem


def in_shard(identifier: str, shard: tuple[int, int] | None) -> bool:
    """A stable split by slide id (not by list position): the same slide always lands in the same shard."""
    if shard is None:
        return True
    index, count = shard
    return zlib.crc32(identifier.encode()) % count == index


def detect_slide(path, out: Path, model: MitosisModel, model_sha256: str, config: Config, threshold: float,
                 device="cpu", workers: int = 4, batch_size: int = 8, mpp=None, on_tiles=None) -> SlideResult:
    """Detect mitoses in one slide and write its Zarr, GeoJSON and overlay into ``out``."""
    started = time.perf_counter()
    identifier = slide_id(path)
    timings = {}
    with open_slide(path, mpp=mpp) as slide:
        tick = time.perf_counter()
        tissue = detect_tissue(slide, config.tissue)
        tiling = TilingConfig(mpp=model.mpp, tile_size=config.tiling.tile_size, halo=config.tiling.halo)
        tiles = tile_grid(slide, tiling, tissue)
        timings["tissue_s"] = time.perf_counter() - tick
        stride = tiling.tile_size - 2 * tiling.halo
        everything = tile_grid(slide, tiling)
        grid = (everything[-1].row + 1, everything[-1].col + 1)
        store = SlideStore(out / f"{identifier}.zarr", (grid[0] * stride, grid[1] * stride), stride)
        tick = time.perf_counter()
        candidates = _run_tiles(slide, tiles, model, store, device, workers, batch_size, on_tiles)
        timings["tiles_s"] = time.perf_counter() - tick
        candidates = merge_duplicates(candidates, config.detector.duplicate_radius_um / slide.mpp)
        table = candidates[candidates[:, 2] >= threshold]
        summary = slide_summary(table[:, :2], slide.mpp, tissue_mm2=tissue.area_mm2,
                                area_mm2=config.clinical.hotspot_area_mm2, shape=config.clinical.hotspot_shape,
                                field_diameter_mm=config.clinical.hpf_diameter_mm,
                                bounds=(0.0, 0.0, float(slide.dimensions[0]), float(slide.dimensions[1])))
        features = detection_features(identifier, table)
        hotspot = hotspot_feature(identifier, summary, slide.mpp) if len(table) else None
        write_geojson(out / f"{identifier}.geojson", features + ([hotspot] if hotspot else []))
        thumbnail = slide.read_whole(_OVERLAY_MPP)
        write_overlay(out / f"{identifier}.overlay.png", thumbnail, tissue.mask, table,
                      (_OVERLAY_MPP / slide.resolution.mpp_x, _OVERLAY_MPP / slide.resolution.mpp_y))
        row = _json_row({
            "slide": identifier, "status": "ok", "threshold": threshold, "error": "",
            "mpp": slide.mpp, "mpp_source": slide.mpp_source, "tiles": len(tiles),
            "model_sha256": model_sha256, "path": str(path),
            **summary,
            "runtime_s": round(time.perf_counter() - started, 3),
        })
        store.finish(candidates, {
            "wsimito_version": __version__, "model_sha256": model_sha256, "config": config.to_dict(),
            "slide": identifier, "path": str(path), "mpp": slide.mpp, "mpp_source": slide.mpp_source,
            "model_mpp": model.mpp, "tile_stride": stride, "tissue_mm2": tissue.area_mm2, "threshold": threshold,
            "timings": timings, "counts_row": row, "detections_note":
            "all candidates after merging; counts, CSV and GeoJSON use those with score >= threshold",
        })
    return SlideResult(identifier, str(path), "ok", table, row)


def _run_tiles(slide, tiles, model, store, device, workers, batch_size, on_tiles) -> np.ndarray:
    """Detections of all tiles, a Dask graph per wave of batches; the model behind one lock per device."""
    model_lock = threading.Lock()
    done, done_lock = [0], threading.Lock()

    def process(batch):
        pixels = np.stack([tile.read(slide) for tile in batch])
        with model_lock:
            results = detect_tiles(model, pixels, device)
        tables = []
        for tile, (prob, boxes, scores) in zip(batch, results):
            store.write_core(tile.row, tile.col, prob[tile.halo : tile.size - tile.halo, tile.halo : tile.size - tile.halo])
            tables.append(tile_to_slide(tile, boxes, scores))
        with done_lock:
            done[0] += len(batch)
            if on_tiles:
                on_tiles(done[0], len(tiles))
        return np.concatenate(tables) if tables else np.zeros((0, len(COLUMNS)))

    batches = [tiles[i : i + batch_size] for i in range(0, len(tiles), batch_size)]
    wave = max(1, 2 * workers)
    found = [np.zeros((0, len(COLUMNS)))]
    for start in range(0, len(batches), wave):
        graph = [dask.delayed(process)(batch) for batch in batches[start : start + wave]]
        found.extend(dask.compute(*graph, scheduler="threads", num_workers=workers))
    return np.concatenate(found)


def completed_result(path, out: Path) -> SlideResult | None:
    """The result of a slide finished by an earlier run, or None if it must be (re)done."""
    identifier = slide_id(path)
    store = out / f"{identifier}.zarr"
    if not (is_complete(store) and (out / f"{identifier}.geojson").exists() and (out / f"{identifier}.overlay.png").exists()):
        return None
    group = zarr.open_group(str(store), mode="r")
    row = dict(group.attrs["counts_row"])
    candidates = np.asarray(group["detections"][:], np.float64).reshape(-1, len(COLUMNS))
    return SlideResult(identifier, str(path), "ok", candidates[candidates[:, 2] >= row["threshold"]], row)


def run_batch(paths, out, model: MitosisModel, model_sha256: str, config: Config, threshold: float, device="cpu",
              workers: int = 4, mpp=None, shard=None, overwrite=False, on_slide=None, on_tiles=None) -> list[SlideResult]:
    """Detect in every slide of this shard; one failure never stops the rest. CSVs rewritten after each slide."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    mine = [p for p in paths if in_shard(slide_id(p), shard)]
    seen: dict[str, str] = {}
    results = []
    for index, path in enumerate(mine):
        identifier = slide_id(path)
        if on_slide:
            on_slide(index, len(mine), identifier)
        if identifier in seen:
            result = _error(path, f"{path}: slide id '{identifier}' is also the name of {seen[identifier]}; rename one",
                            threshold, model_sha256)
        else:
            seen[identifier] = str(path)
            result = None if overwrite else completed_result(path, out)
            if result is None:
                try:
                    result = detect_slide(path, out, model, model_sha256, config, threshold, device, workers,
                                          mpp=mpp, on_tiles=on_tiles)
                except WsimitoError as exc:
                    result = _error(path, str(exc), threshold, model_sha256)
                except Exception as exc:  # one broken slide must not stop the batch
                    result = _error(path, f"{path}: {type(exc).__name__}: {exc}", threshold, model_sha256)
        results.append(result)
        write_reports(out, results, shard)
    write_reports(out, results, shard)
    return results


def write_reports(out: Path, results: list[SlideResult], shard=None) -> None:
    suffix = "" if shard is None else f".shard-{shard[0]}-of-{shard[1]}"
    write_csv_atomic(out / f"counts{suffix}.csv", COUNT_COLUMNS, [r.row for r in results])
    rows = ({"slide": r.slide, **dict(zip(COLUMNS, map(float, values)))} for r in results for values in r.table)
    write_csv_atomic(out / f"detections{suffix}.csv", DETECTION_COLUMNS, rows)


def _error(path, message: str, threshold: float, model_sha256: str) -> SlideResult:
    row = {"slide": slide_id(path), "status": "error", "error": message, "threshold": threshold,
           "model_sha256": model_sha256, "path": str(path)}
    return SlideResult(slide_id(path), str(path), "error", row=row)


def _json_row(row: dict) -> dict:
    """Numpy scalars and nan made JSON-safe for Zarr attributes."""
    clean = {}
    for key, value in row.items():
        if isinstance(value, (np.floating, float)):
            value = None if not np.isfinite(value) else float(value)
        elif isinstance(value, np.integer):
            value = int(value)
        elif isinstance(value, np.bool_):
            value = bool(value)
        clean[key] = value
    return clean
