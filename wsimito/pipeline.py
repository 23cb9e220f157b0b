"""``wsimito detect``: one slide as a Dask graph of tile batches, and the batch driver around it.

Per slide: tissue mask -> tissue tiles at the model mpp -> batches read in
parallel threads (one Dask graph; its threaded scheduler runs at most
``workers`` batches at once and freed memory goes back to the OS after each
batch, so the tiles in flight bound memory, not the slide's size) -> one
model worker per device (a lock: tiles are read while the model runs) ->
detections kept in each tile's core, mapped to level-0 coordinates, merged
across borders by a radius in µm -> Zarr, GeoJSON, overlay PNG, a gallery of the
best candidates, and rows for the batch CSVs.

A slide is done when its Zarr store is complete and its GeoJSON and overlay
exist; every file is written under a temporary name and renamed, so a run
killed at any moment is finished by rerunning it.

Only one process at a time works on a slide: ``process_slide`` holds the
slide's lock (wsimito.locks) from the completeness check to the last rename.
A run that finds a slide locked by a live process does its other slides
first, then waits for that one and takes the finished result: two runs over
the same list share the work and both end with every row right. On a Dask
cluster (wsimito.cluster) the slide is the unit of work and the driver only
writes the tables.
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
from wsimito.bundle import MitosisModel
from wsimito.config import Config, TilingConfig
from wsimito.devices import tile_batch_size
from wsimito.errors import SettingsError, WsimitoError
from wsimito.evaluation import slide_summary
from wsimito.heap import release_free_memory
from wsimito.inference import detect_tiles, slide_stain
from wsimito.locks import SlideLock
from wsimito.model_settings import used_settings
from wsimito.outputs.gallery import write_gallery
from wsimito.outputs.geojson import detection_features, hotspot_feature, unread_feature, write_geojson
from wsimito.outputs.overlay import write_overlay
from wsimito.outputs.zarr_store import SlideStore, is_complete, update_attributes
from wsimito.reports import write_reports
from wsimito.resume import needs_new_outputs, stale_reason
from wsimito.schema import DETECTION_COLUMNS
from wsimito.slide import open_slide
from wsimito.stitch import merge_duplicates, tile_to_slide
from wsimito.tiling import tile_grid
from wsimito.tissue import detect_tissue, no_tissue_reason
from wsimito.unread import UnreadTile, describe_unread, unread_tissue

_OVERLAY_MPP = 16.0
# A slide this many times coarser than the model is enlarged to the model's mpp: a 20x scan for a 40x model.
COARSE_SCAN = 1.5
_DEVICE_LOCKS: dict[str, threading.Lock] = {}
_DEVICE_LOCKS_GUARD = threading.Lock()


@dataclass
class SlideResult:
    slide: str
    path: str
    status: str  # ok | partial | no-tissue | error (schema.COUNTS_CSV_COLUMNS)
    table: np.ndarray = field(default_factory=lambda: np.zeros((0, len(DETECTION_COLUMNS))))  # above threshold
    row: dict = field(default_factory=dict)  # the counts.csv row
    notes: list = field(default_factory=list)  # what happened worth telling (waited for another run, ...)

    @property
    def error(self) -> str:
        return self.row.get("error", "")

    @classmethod
    def failed(cls, path, message: str, threshold: float, model_sha256: str) -> "SlideResult":
        """A slide that could not be done: its counts.csv row says why, and the run goes on."""
        row = {"slide": slide_id(path), "status": "error", "error": message, "threshold": threshold,
               "model_sha256": model_sha256, "path": str(path)}
        return cls(slide_id(path), str(path), "error", row=row)


def slide_id(path) -> str:
    return Path(path).stem


def in_shard(identifier: str, shard: tuple[int, int] | None) -> bool:
    """A stable split by slide id (not by list position): the same slide always lands in the same shard."""
    if shard is None:
        return True
    index, count = shard
    return zlib.crc32(identifier.encode()) % count == index


def detect_slide(path, out: Path, model: MitosisModel, model_sha256: str, config: Config, threshold: float,
                 device="cpu", workers: int = 4, batch_size: int | None = None, mpp=None, on_tiles=None,
                 recorded_path=None) -> SlideResult:
    """Detect mitoses in one slide and write its Zarr, GeoJSON and overlay into ``out``.

    ``recorded_path``: the path written into the outputs when it differs from the one opened (a cluster
    worker opens the absolute path of what the user typed). Callers other than tests go through
    ``process_slide``, which holds the slide's lock.
    """
    started = time.perf_counter()
    shown = str(path if recorded_path is None else recorded_path)
    identifier = slide_id(path)
    timings = {}
    with open_slide(path, mpp=mpp) as slide:
        tick = time.perf_counter()
        tissue = detect_tissue(slide, config.tissue)
        tiling = TilingConfig(mpp=model.mpp, tile_size=config.tiling.tile_size, halo=config.tiling.halo)
        tiles = tile_grid(slide, tiling, tissue)
        batch_size = batch_size or tile_batch_size(device, tiling.tile_size, model.segmentation.net.widths)
        timings["tissue_s"] = time.perf_counter() - tick
        stride = tiling.tile_size - 2 * tiling.halo
        everything = tile_grid(slide, tiling)
        grid = (everything[-1].row + 1, everything[-1].col + 1)
        store = SlideStore(out / f"{identifier}.zarr", (grid[0] * stride, grid[1] * stride), stride, model.mpp)
        tick = time.perf_counter()
        stain = slide_stain(model, slide, tiles)
        candidates, unread = _run_tiles(slide, tiles, model, store, device, workers, batch_size, on_tiles, stain,
                                        tissue)
        timings["tiles_s"] = time.perf_counter() - tick
        candidates = merge_duplicates(candidates, config.detector.duplicate_radius_um / slide.mpp)
        candidates[:, 2] = model.rcnn.relative(candidates[:, 2])  # the model's scale, if it scores slide-relative
        table, row = _slide_outputs(slide, identifier, shown, out, candidates, threshold, tissue, config,
                                    model_sha256, len(tiles), unread, started)
        store.finish(candidates, {
            "wsimito_version": __version__, "model_sha256": model_sha256,
            "config": used_settings(model, config, threshold).to_dict(),  # the model's settings, not the run's
            "slide": identifier, "path": shown, "mpp": slide.mpp, "mpp_source": slide.mpp_source,
            "model_mpp": model.mpp, "tile_stride": stride, "tissue_mm2": tissue.area_mm2, "threshold": threshold,
            "unread_tiles": [tile.to_dict() for tile in unread], "timings": timings, "counts_row": row,
            "detections_note": "all candidates after merging, scored as the model scores (relative to the slide's "
            "background when its detector.background_quantile is set); counts, CSV and GeoJSON use those with "
            "score >= threshold",
        })
    return SlideResult(identifier, shown, row["status"], table, row, _coarse_scan_notes(identifier, slide.mpp,
                                                                                           model.mpp))


def _coarse_scan_notes(identifier: str, slide_mpp: float, model_mpp: float) -> list[str]:
    """Said, never hidden: a slide more than ``COARSE_SCAN`` times coarser than the model is enlarged to its mpp,
    and the shipped model learned from 40x scans only (model card)."""
    if slide_mpp <= COARSE_SCAN * model_mpp:
        return []
    return [f"{identifier}: scanned at {slide_mpp:.3g} µm/px, {slide_mpp / model_mpp:.1f} times coarser than the "
            f"model's {model_mpp:g} µm/px; it is enlarged to that, and a model that learned from finer scans counts "
            "less reliably there (the shipped one learned from 40x scans only: see its model card)"]


def _slide_outputs(slide, identifier: str, shown: str, out: Path, candidates: np.ndarray, threshold: float, tissue,
                   config: Config, model_sha256: str, tiles: int, unread: list[UnreadTile],
                   started: float) -> tuple[np.ndarray, dict]:
    """Everything a slide's candidates and a threshold give, without the networks: the counted detections,
    the clinical numbers (over the tissue examined: ``unread`` tiles' lost tissue left out), GeoJSON, gallery
    and overlay, and the counts.csv row with its status."""
    table = candidates[candidates[:, 2] >= threshold]
    unread_mm2 = sum(tile.mm2 for tile in unread)
    summary = slide_summary(table[:, :2], slide.mpp, tissue_mm2=max(0.0, tissue.area_mm2 - unread_mm2),
                            area_mm2=config.clinical.hotspot_area_mm2, shape=config.clinical.hotspot_shape,
                            field_diameter_mm=config.clinical.hpf_diameter_mm,
                            bounds=(0.0, 0.0, float(slide.dimensions[0]), float(slide.dimensions[1])))
    features = detection_features(identifier, table)
    hotspot = hotspot_feature(identifier, summary, slide.mpp) if len(table) else None
    lost = [unread_feature(identifier, [tile.box for tile in unread], unread_mm2)] if unread else []
    write_geojson(out / f"{identifier}.geojson", features + ([hotspot] if hotspot else []) + lost)
    write_gallery(out / f"{identifier}.gallery.png", slide, candidates, threshold)
    thumbnail = slide.read_whole_checked(_OVERLAY_MPP).pixels  # a partial slide still gets its overview
    write_overlay(out / f"{identifier}.overlay.png", thumbnail, tissue.mask, table,
                  (_OVERLAY_MPP / slide.resolution.mpp_x, _OVERLAY_MPP / slide.resolution.mpp_y))
    if not tiles:
        status, error = "no-tissue", f"{shown}: {no_tissue_reason(slide, config.tissue)}"
    elif unread:
        status, error = "partial", f"{shown}: {describe_unread(unread, tiles)}"
    else:
        status, error = "ok", ""
    row = _json_row({
        "slide": identifier, "status": status, "threshold": threshold, "error": error,
        "mpp": slide.mpp, "mpp_source": slide.mpp_source, "tiles": tiles,
        "unread_tiles": len(unread), "unread_mm2": unread_mm2,
        "model_sha256": model_sha256, "path": shown,
        **summary,
        "runtime_s": round(time.perf_counter() - started, 3),
    })
    return table, row


def rethreshold(path, out: Path, settings: "DetectSettings", recorded_path=None) -> SlideResult:
    """A finished slide answered again at another threshold or clinical setting, from the candidates its store
    holds (every one the networks scored): no network runs."""
    started = time.perf_counter()
    shown = str(path if recorded_path is None else recorded_path)
    identifier = slide_id(path)
    store = out / f"{identifier}.zarr"
    group = zarr.open_group(str(store), mode="r")
    candidates = np.asarray(group["detections"][:], np.float64).reshape(-1, len(DETECTION_COLUMNS))
    # stores written before unread tiles were recorded have none listed
    unread = [UnreadTile.from_dict(tile) for tile in group.attrs.get("unread_tiles", [])]
    with open_slide(path, mpp=settings.mpp) as slide:
        tissue = detect_tissue(slide, settings.config.tissue)
        table, row = _slide_outputs(slide, identifier, shown, out, candidates, settings.threshold, tissue,
                                    settings.config, settings.model_sha256, group.attrs["counts_row"]["tiles"],
                                    unread, started)
    recorded = group.attrs["config"]
    update_attributes(store, {"threshold": settings.threshold, "counts_row": row, "config": {
        **recorded, "clinical": settings.config.to_dict()["clinical"],
        "detector": {**recorded.get("detector", {}), "threshold": settings.threshold}}})
    return SlideResult(identifier, shown, row["status"], table, row)


def _device_lock(device) -> threading.Lock:
    """One lock per device for the whole process: the model runs one batch at a time on a device, also when
    a cluster worker runs two slides at once."""
    with _DEVICE_LOCKS_GUARD:
        return _DEVICE_LOCKS.setdefault(str(device), threading.Lock())


def _run_tiles(slide, tiles, model, store, device, workers, batch_size, on_tiles, stain,
               tissue) -> tuple[np.ndarray, list[UnreadTile]]:
    """Detections of all tiles, one Dask graph of batches; the model behind one lock per device. And the tiles
    whose tissue the reader could not fully produce (they are still run: what was read counts).

    One graph rather than waves: a wave's last batch left the model idle while the next wave's first was read.
    """
    model_lock = _device_lock(device)
    done, done_lock = [0], threading.Lock()

    def detect(batch) -> tuple[np.ndarray, list[UnreadTile]]:
        regions = [tile.read_checked(slide) for tile in batch]
        lost = [found for tile, region in zip(batch, regions) if (found := unread_tissue(tile, region, tissue))]
        pixels = np.stack([region.pixels for region in regions])
        del regions  # their pixels are copied into the batch: freed before the model runs
        with model_lock:
            results = detect_tiles(model, pixels, device, stain)
        tables = []
        for tile, (prob, boxes, scores) in zip(batch, results):
            core = prob[tile.halo : tile.size - tile.halo, tile.halo : tile.size - tile.halo]
            store.write_core(tile.row, tile.col, core)
            tables.append(tile_to_slide(tile, boxes, scores))
        return (np.concatenate(tables) if tables else np.zeros((0, len(DETECTION_COLUMNS)))), lost

    def process(batch):
        found = detect(batch)
        release_free_memory()  # the batch's pixels, maps and activations are all freed by now
        with done_lock:
            done[0] += len(batch)
            if on_tiles:
                on_tiles(done[0], len(tiles))
        return found

    graph = [dask.delayed(process)(tiles[i : i + batch_size]) for i in range(0, len(tiles), batch_size)]
    found = dask.compute(*graph, scheduler="threads", num_workers=workers)
    table = np.concatenate([np.zeros((0, len(DETECTION_COLUMNS))), *(part for part, _ in found)])
    return table, [tile for _, lost in found for tile in lost]


def completed_result(path, out: Path, since: float | None = None) -> SlideResult | None:
    """The result of a slide finished by an earlier run, or None if it must be (re)done.

    ``since``: only a result whose store was finished at or after this time (``time.time()``) counts.
    """
    identifier = slide_id(path)
    store = out / f"{identifier}.zarr"
    outputs = (out / f"{identifier}.geojson", out / f"{identifier}.overlay.png")
    if not (is_complete(store) and all(path.exists() for path in outputs)):
        return None
    if since is not None and (store / "zarr.json").stat().st_mtime < since:  # attrs["complete"] is written last
        return None
    group = zarr.open_group(str(store), mode="r")
    row = dict(group.attrs["counts_row"])
    candidates = np.asarray(group["detections"][:], np.float64).reshape(-1, len(DETECTION_COLUMNS))
    return SlideResult(identifier, str(path), row["status"], candidates[candidates[:, 2] >= row["threshold"]], row)


@dataclass(frozen=True)
class DetectSettings:
    """Everything about a batch a slide needs besides the model; small and picklable for cluster workers."""

    config: Config
    threshold: float
    model_sha256: str
    device: str = "cpu"
    workers: int = 4
    mpp: float | None = None
    overwrite: bool = False
    started: float = 0.0  # time.time() when the batch began: with overwrite, results newer than this are kept


def lock_path(out: Path, identifier: str) -> Path:
    return Path(out) / f".{identifier}.lock"


def process_slide(path, out: Path, model: MitosisModel, settings: DetectSettings, block: bool = True,
                  on_tiles=None, on_note=None, recorded_path=None) -> SlideResult | None:
    """One slide under its lock: reuse a complete result or detect; errors become an error result.

    With ``block=False`` returns None at once when another live process holds the slide. When it had to wait,
    the other process's finished result is used (also with ``overwrite``: it is newer than this batch), and a
    note says so. ``on_note(text)`` hears about the wait as it starts.
    """
    out = Path(out)
    identifier = slide_id(path)
    lock = SlideLock(lock_path(out, identifier))

    def waiting(holder):
        if on_note:
            who = holder.describe() if holder else "another run"
            on_note(f"{identifier}: waiting for {who}, which is processing it (lock {lock.path})")

    if not lock.acquire(block=block, on_wait=waiting):
        return None
    try:
        result = _finished_or_detect(path, out, model, settings, lock.waited_for, on_tiles, recorded_path)
    finally:
        lock.release()
    if lock.lost:
        result.notes.append(f"{identifier}: its lock {lock.path} was broken by another run while this one "
                            "worked (stale_after_s too short for this slide?)")
    return result


def _finished_or_detect(path, out, model, settings: DetectSettings, waited, on_tiles, recorded_path) -> SlideResult:
    identifier = slide_id(path)
    shown = str(path if recorded_path is None else recorded_path)
    result = completed_result(path, out, since=settings.started if settings.overwrite else None)
    notes = []
    if result is not None:
        attributes = zarr.open_group(str(out / f"{identifier}.zarr"), mode="r").attrs.asdict()
        stale = stale_reason(attributes, settings.model_sha256, settings.config)
        if stale and result.status == "no-tissue":  # nothing was examined, so redoing it loses nothing
            notes.append(f"{identifier}: the finished result in {out} found no tissue and {stale}; done again")
        elif stale:
            return SlideResult.failed(shown, f"{identifier}: the finished result in {out} {stale}; rerun with "
                                      "--overwrite to redo it (or write to another folder)", settings.threshold,
                                      settings.model_sha256)
        elif needs_new_outputs(attributes, settings.threshold, settings.config):
            result = rethreshold(path, out, settings, recorded_path)
            result.notes.append(f"{identifier}: threshold {settings.threshold:g} and clinical settings applied to "
                                "the candidates of the finished result (no network run)")
            return result
        else:
            result.path = shown
            if waited is not None:
                result.notes.append(f"{identifier}: finished by {waited.describe()} while this run waited; its "
                                    "result is used")
            return result
    try:
        result = detect_slide(path, out, model, settings.model_sha256, settings.config, settings.threshold,
                              settings.device, settings.workers, mpp=settings.mpp, on_tiles=on_tiles,
                              recorded_path=recorded_path)
    except WsimitoError as exc:
        result = SlideResult.failed(shown, str(exc), settings.threshold, settings.model_sha256)
    except Exception as exc:  # one broken slide must not stop the batch
        result = SlideResult.failed(shown, f"{shown}: {type(exc).__name__}: {exc}", settings.threshold,
                                    settings.model_sha256)
    result.notes += notes
    if waited is not None:
        result.notes.append(f"{identifier}: {waited.describe()} stopped without finishing it; done here instead")
    return result


def check_settings(model: MitosisModel, config: Config, threshold: float) -> None:
    """Settings that would fail or mislead every slide, refused before any is touched: a ``SettingsError``
    (one line, exit code 2) naming the setting."""
    multiple, tile = model.segmentation.multiple, config.tiling.tile_size
    if tile % multiple:
        above = tile + multiple - tile % multiple
        raise SettingsError(f"tiling.tile_size {tile}: the model's segmentation net takes sides that are a "
                            f"multiple of {multiple} (e.g. {above - multiple or above} or {above})")
    if not 0.0 <= threshold <= 1.0:
        raise SettingsError(f"threshold {threshold:g} is outside [0, 1] (a calibrated score)")


def run_batch(paths, out, model: MitosisModel | None, model_sha256: str, config: Config, threshold: float,
              device="cpu", workers: int = 4, mpp=None, shard=None, overwrite=False, on_slide=None, on_tiles=None,
              on_note=None, on_result=None, runner=None) -> list[SlideResult]:
    """Detect in every slide of this shard; one failure never stops the rest. CSVs rewritten after each slide.

    ``runner(jobs, out, settings, on_note)``, when given, runs the slides elsewhere (see
    ``wsimito.cluster.ClusterRunner``) and yields ``(index, SlideResult)`` in any order; ``model`` may then be
    None (the caller checks the settings against it first, ``check_settings``). Without it slides run here, one
    after the other. ``on_result(done, total, result)`` follows every finished slide; notes (a wait for another
    run, ...) go to ``on_note(text)``.
    """
    if model is not None:
        check_settings(model, config, threshold)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    mine = [p for p in paths if in_shard(slide_id(p), shard)]
    settings = DetectSettings(config, threshold, model_sha256, str(device), workers, mpp, overwrite, time.time())
    results: dict[int, SlideResult] = {}
    jobs: list[tuple[int, object]] = []
    seen: dict[str, str] = {}
    for index, path in enumerate(mine):
        identifier = slide_id(path)
        if identifier in seen:
            results[index] = SlideResult.failed(path, f"{path}: slide id '{identifier}' is also the name of "
                                                f"{seen[identifier]}; rename one", threshold, model_sha256)
        else:
            seen[identifier] = str(path)
            jobs.append((index, path))
    if runner is None:
        found = _run_here(jobs, len(mine), out, model, settings, on_slide, on_tiles, on_note)
    else:
        found = runner(jobs, out, settings, on_note)
    for index, result in found:
        results[index] = result
        for note in result.notes:
            if on_note:
                on_note(note)
        if on_result:
            on_result(len(results), len(mine), result)
        write_reports(out, _ordered(results), shard)
    write_reports(out, _ordered(results), shard)
    return _ordered(results)


def _run_here(jobs, total, out, model, settings, on_slide, on_tiles, on_note):
    """Slides in this process, in order; a slide another run holds is put off until the others are done."""
    put_off = []
    for index, path in jobs:
        if on_slide:
            on_slide(index, total, slide_id(path))
        result = process_slide(path, out, model, settings, block=False, on_tiles=on_tiles, on_note=on_note)
        if result is None:
            holder = SlideLock(lock_path(out, slide_id(path))).holder()
            if on_note:
                on_note(f"{slide_id(path)}: {holder.describe() if holder else 'another run'} is processing it; "
                        "coming back to it after the other slides")
            put_off.append((index, path))
            continue
        yield index, result
    for index, path in put_off:
        if on_slide:
            on_slide(index, total, slide_id(path))
        yield index, process_slide(path, out, model, settings, block=True, on_tiles=on_tiles, on_note=on_note)


def _ordered(results: dict[int, SlideResult]) -> list[SlideResult]:
    return [results[i] for i in sorted(results)]


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
