"""Inference with a detector bundle: proposals for a tile or a whole image, and scored detections per tile.

Training (``train_det``) and ``detect`` both propose through here, so the R-CNN
trains on the boxes it will score.
"""

from __future__ import annotations

import numpy as np

from wsimito.bundle import MitosisModel
from wsimito.config import Config
from wsimito.proposals import refine_with_selective_search, segmentation_proposals, selective_search
from wsimito.segmentation import predict_proba
from wsimito.stain import StainFit, fit_stain
from wsimito.tiling import array_tiles


def propose(rgb: np.ndarray, prob: np.ndarray, config: Config) -> np.ndarray:
    """Proposals (pixel boxes) for an RGB tile at the model mpp, by ``config.detector.proposals``."""
    c, mpp = config.detector, config.tiling.mpp
    min_side, max_side = c.min_box_um / mpp, c.max_box_um / mpp
    if c.proposals.startswith("search-"):
        return selective_search(rgb, c.proposals.split("-", 1)[1], min_side, max_side)
    seeds = segmentation_proposals(prob, c.proposal_threshold, c.proposal_margin_um / mpp,
                                   min_area=(c.min_box_um / mpp) ** 2 / 4, max_side=max_side)
    if c.proposals == "segmentation+search":
        return refine_with_selective_search(rgb, seeds, int(2 * max_side), "fast", min_side, max_side)
    return seeds


def propose_image(rgb: np.ndarray, prob: np.ndarray, config: Config) -> np.ndarray:
    """Proposals for a whole image at the model mpp (a training field), as ``detect`` makes them on a slide.

    Selective search runs on the same tiles ``detect`` reads (white beyond the edge) and keeps the boxes
    centred in each tile's core: its cost grows faster than the area (190 s on a whole 2084 px MITOS field,
    36 s in 512 px tiles, on one loaded CPU core), and the R-CNN should train on the boxes it will score. The
    segmentation modes see the whole map: with the halo, ``detect`` finds the same regions.
    """
    tile, halo = config.tiling.tile_size, config.tiling.halo
    height, width = rgb.shape[:2]
    if not config.detector.proposals.startswith("search-") or max(height, width) <= tile:
        return propose(rgb, prob, config)
    stride = tile - 2 * halo
    padded, corners = array_tiles(rgb, tile, halo)
    found = []
    for top, left in corners:
        boxes = propose(padded[top : top + tile, left : left + tile], None, config)
        centre_x, centre_y = (boxes[:, 0] + boxes[:, 2]) / 2 - halo, (boxes[:, 1] + boxes[:, 3]) / 2 - halo
        in_core = (centre_x >= 0) & (centre_x < stride) & (centre_y >= 0) & (centre_y < stride)
        found.append(boxes[in_core] + [left - halo, top - halo, left - halo, top - halo])
    return np.concatenate(found).reshape(-1, 4)


def detect_tiles(model: MitosisModel, tiles: np.ndarray, device="cpu", stain: StainFit | None = None):
    """Per tile (N x H x W x 3 at the model mpp): (probability map, boxes, scores).

    Each net sees the whole batch at once, so the device is synchronised twice per batch, never per tile.
    ``stain``: the slide's staining (``slide_stain``), for a model that normalises once per slide.
    """
    probs = predict_proba(model.segmentation, tiles, device)
    proposals = [propose(rgb, prob, model.config) for rgb, prob in zip(tiles, probs)]
    found = model.rcnn.predict_many(tiles, proposals, stain=stain)
    return [(prob, boxes, scores) for prob, (boxes, scores) in zip(probs, found)]


# Tiles a slide's staining is estimated from: spread over its tissue, enough for a stable estimate.
STAIN_SAMPLE_TILES = 16


def slide_stain(model: MitosisModel, slide, tiles) -> StainFit | None:
    """The staining of a whole slide from tissue tiles spread over it, for a model whose R-CNN normalises
    once per slide (``detector.stain_scope: slide``): every tile then gets the same mapping, where a tile
    that is mostly one stain (a dense cluster of nuclei) would give a skewed estimate of its own. None for
    other models."""
    detector = model.rcnn.config
    if detector.stain_normalization == "none" or detector.stain_scope != "slide" or not tiles:
        return None
    chosen = tiles[:: max(1, len(tiles) // STAIN_SAMPLE_TILES)][:STAIN_SAMPLE_TILES]
    return fit_stain([tile.read_checked(slide).pixels for tile in chosen])  # past damaged tiles, as detect reads
