"""The detector bundle ``detect`` loads: segmentation net + R-CNN + the config and mpp they share.

A bundle is a directory: ``segmentation.pt`` (phase 1), ``rcnn.pt`` (phase 2),
and ``model.json`` (wsimito version, mpp, config, training notes). Both ``.pt``
files load with ``weights_only=True``. Its hash (over the three files) is what
every output records as the model's identity.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from wsimito import __version__
from wsimito.config import Config, load_config
from wsimito.errors import WsimitoError
from wsimito.proposals import refine_with_selective_search, segmentation_proposals, selective_search
from wsimito.rcnn import RCNN
from wsimito.segmentation import SegmentationModel, predict_proba
from wsimito.tiling import array_tiles

_FILES = ("model.json", "segmentation.pt", "rcnn.pt")


@dataclass
class MitosisModel:
    segmentation: SegmentationModel
    rcnn: RCNN
    config: Config
    notes: dict = field(default_factory=dict)

    @property
    def mpp(self) -> float:
        return self.segmentation.mpp

    def save(self, directory) -> Path:
        """Write the bundle; files go in under temporary names and are renamed once all are written."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"kind": "wsimito-detector", "wsimito_version": __version__, "mpp": self.mpp,
                "config": self.config.to_dict(), "notes": self.notes}
        staged = []
        for name, write in (
            ("segmentation.pt", lambda p: torch.save(self.segmentation.state(), p)),
            ("rcnn.pt", lambda p: torch.save(self.rcnn.state(), p)),
            ("model.json", lambda p: p.write_text(json.dumps(meta, indent=2))),
        ):
            partial = directory / f".{name}.partial"
            write(partial)
            staged.append((partial, directory / name))
        for partial, final in staged:
            partial.replace(final)
        return directory

    @classmethod
    def load(cls, directory, device="cpu") -> "MitosisModel":
        directory = Path(directory)
        missing = [name for name in _FILES if not (directory / name).exists()]
        if missing:
            raise WsimitoError(f"{directory}: not a wsimito detector bundle (missing {', '.join(missing)})")
        meta = json.loads((directory / "model.json").read_text())
        config = load_config(None, _flatten(meta["config"]))
        segmentation = SegmentationModel.load(directory / "segmentation.pt", device)
        state = torch.load(directory / "rcnn.pt", map_location=device, weights_only=True)
        return cls(segmentation, RCNN.from_state(state, device), config, meta.get("notes", {}))


def bundle_sha256(directory) -> str:
    """One hash over the bundle's files, in a fixed order."""
    digest = hashlib.sha256()
    for name in _FILES:
        digest.update(name.encode())
        digest.update((Path(directory) / name).read_bytes())
    return digest.hexdigest()


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


def detect_tiles(model: MitosisModel, tiles: np.ndarray, device="cpu"):
    """Per tile (N x H x W x 3 at the model mpp): (probability map, boxes, scores).

    Each net sees the whole batch at once, so the device is synchronised twice per batch, never per tile.
    """
    probs = predict_proba(model.segmentation, tiles, device)
    proposals = [propose(rgb, prob, model.config) for rgb, prob in zip(tiles, probs)]
    found = model.rcnn.predict_many(tiles, proposals)
    return [(prob, boxes, scores) for prob, (boxes, scores) in zip(probs, found)]


def _flatten(sections: dict) -> dict:
    return {f"{section}.{key}": value for section, values in sections.items() for key, value in values.items()}
