"""``wsimito bench``: the pipeline's speed against its own model-only limit, in one process and run.

The GPU is rarely the bottleneck in slide pipelines; reading, decoding,
post-processing and writing are. So the same run measures:

* ``model_tiles_per_s``: segmentation + detection on tiles already in memory,
  with the pipeline's batch size, precision and layout: the most the pipeline
  could reach (timed before and after the pipeline, the faster kept: on a
  machine shared with other jobs one short run can land in a busy spell);
* ``read_mpx_per_s``: reading and decoding tiles alone, the pipeline's threads;
* ``pipeline_tiles_per_s``: ``detect``'s own code path on the whole slide;
* ``efficiency`` = pipeline / model, peak memory, and time per stage.
"""

from __future__ import annotations

import resource
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from wsimito import devices
from wsimito.bundle import MitosisModel
from wsimito.config import Config, TilingConfig
from wsimito.inference import detect_tiles
from wsimito.pipeline import detect_slide
from wsimito.slide import open_slide
from wsimito.tiling import tile_grid
from wsimito.tissue import detect_tissue


def run_bench(model: MitosisModel, model_sha256: str, config: Config, slide_path=None, size: int = 8192,
              device="cpu", workers: int = 4, quick: bool = False, on_stage=None) -> dict:
    """All measurements as one flat dict (the keys ``wsimito bench --json`` prints)."""
    stage = on_stage or (lambda _: None)
    with tempfile.TemporaryDirectory(prefix="wsimito-bench-") as scratch:
        scratch = Path(scratch)
        if slide_path is None:
            stage(f"writing a {size}x{size} synthetic slide")
            from wsimito.synth import write_slide

            slide_path = scratch / f"synthetic-{size}.tiff"
            write_slide(slide_path, size=(size, size), mpp=0.25, seed=0)
        with open_slide(slide_path) as slide:
            tiling = TilingConfig(mpp=model.mpp, tile_size=config.tiling.tile_size, halo=config.tiling.halo)
            tiles = tile_grid(slide, tiling, detect_tissue(slide, config.tissue))
            batch = devices.tile_batch_size(device, tiling.tile_size, model.segmentation.net.widths)
            # whole batches: a smaller last one is a new shape, which WSIMITO_COMPILE would compile anew
            whole_batches = max(1, min(len(tiles), (2 if quick else 8) * batch) // batch)
            # spread over the slide like the tiles the pipeline runs, not its first rows (the tissue's top edge)
            sample = tiles[:: max(1, len(tiles) // (whole_batches * batch))][: whole_batches * batch]
            stage(f"reading {len(sample)} tiles with {workers} threads")
            read_s, pixels = _time_reads(slide, sample, workers)
            stage("model alone on tiles in memory")
            model_s = _time_model(model, pixels, device, batch)
        stage(f"the pipeline on {len(tiles)} tissue tiles")
        _reset_gpu_peak(device)
        started = time.perf_counter()
        detect_slide(slide_path, scratch, model, model_sha256, config, model.config.detector.threshold, device,
                     workers, batch)
        pipeline_s = time.perf_counter() - started
        stage("model alone again")
        model_s = min(model_s, _time_model(model, pixels, device, batch))
    model_rate = len(pixels) / model_s
    pipeline_rate = len(tiles) / pipeline_s
    result = {
        "device": str(device),
        "slide": str(slide_path),
        "tiles": len(tiles),
        "tile_size": tiling.tile_size,
        "batch_size": batch,
        "precision": devices.precision(device),
        "compile": devices.compiled(model.segmentation.net) is not model.segmentation.net,  # False if it failed
        "workers": workers,
        "model_tiles_per_s": model_rate,
        "read_mpx_per_s": len(pixels) * tiling.tile_size**2 / 1e6 / read_s,
        "pipeline_tiles_per_s": pipeline_rate,
        "efficiency": pipeline_rate / model_rate,
        "pipeline_s": pipeline_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if torch.device(device).type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


def _time_reads(slide, tiles, workers):
    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        pixels = np.stack(list(pool.map(lambda tile: tile.read(slide), tiles)))
    return time.perf_counter() - started, pixels


def _time_model(model, pixels, device, batch) -> float:
    detect_tiles(model, pixels[:batch], device)  # warm-up: allocations, kernels (and compiling, if asked)
    _synchronize(device)
    started = time.perf_counter()
    for start in range(0, len(pixels), batch):
        detect_tiles(model, pixels[start : start + batch], device)
    _synchronize(device)
    return time.perf_counter() - started


def _synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _reset_gpu_peak(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
