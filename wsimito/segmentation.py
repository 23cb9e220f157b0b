"""The phase-1 segmentation model as a file, and running it over images of any size.

A model file holds the network's spec, its weights, and the mpp it was trained
at, so inference always resamples to the resolution the network knows. It is
saved with ``torch.save`` and loaded with ``weights_only=True``: no pickled code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from wsimito import __version__, devices
from wsimito.config import plain
from wsimito.errors import WsimitoError
from wsimito.nets import build_segmentation_net
from wsimito.nets.inputs import to_tensor
from wsimito.outputs.atomic import atomic_path
from wsimito.tiling import array_tiles

MODEL_KIND = "wsimito-segmentation"


@dataclass
class SegmentationModel:
    net: torch.nn.Module
    spec: dict  # the ``segmentation`` config section that builds ``net``
    mpp: float  # µm/px the network was trained at
    info: dict = field(default_factory=dict)  # training provenance and metrics

    @classmethod
    def new(cls, spec: dict, mpp: float) -> "SegmentationModel":
        return cls(_build(spec), dict(spec), float(mpp))

    @property
    def multiple(self) -> int:
        """Input sides must be a multiple of this (one halving per level below the first)."""
        return self.net.size_multiple

    def state(self) -> dict:
        return {
            "kind": MODEL_KIND,
            "wsimito_version": __version__,
            "spec": plain(self.spec),
            "mpp": self.mpp,
            "info": plain(self.info),
            "state_dict": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
        }

    def save(self, path) -> None:
        """Write atomically: a crash never leaves a half-written model under ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save(self.state(), tmp)

    @classmethod
    def load(cls, path, device="cpu") -> "SegmentationModel":
        path = Path(path)
        try:
            state = torch.load(path, map_location=device, weights_only=True)
        except FileNotFoundError:
            raise WsimitoError(f"{path}: model file not found") from None
        except Exception as exc:
            raise WsimitoError(f"{path}: not a wsimito model file ({str(exc).splitlines()[0][:120]})") from None
        if not isinstance(state, dict) or state.get("kind") != MODEL_KIND:
            raise WsimitoError(f"{path}: not a wsimito segmentation model")
        missing = [key for key in ("spec", "mpp", "state_dict") if key not in state]
        if missing:
            raise WsimitoError(f"{path}: the required key(s) {', '.join(missing)} are missing")
        try:
            model = cls(_build(state["spec"]), dict(state["spec"]), float(state["mpp"]), state.get("info", {}))
            model.net.load_state_dict(state["state_dict"])
        except (WsimitoError, RuntimeError) as exc:  # a spec key renamed, weights of another net
            raise WsimitoError(f"{path}: {str(exc).splitlines()[0]}") from None
        model.net.to(device).eval()
        return model


def _build(spec: dict) -> torch.nn.Module:
    try:
        return build_segmentation_net(dict(spec))
    except ValueError as exc:
        raise WsimitoError(f"segmentation config: {exc}") from None


@torch.no_grad()
def predict_proba(model: SegmentationModel, batch: np.ndarray, device="cpu") -> np.ndarray:
    """Mitosis probability (N x H x W float32) for a batch of RGB tiles at the model's mpp.

    One copy to the device and one back per batch; the device's precision and layout (wsimito.devices).
    """
    net = devices.compiled(devices.place(model.net, device))
    with devices.autocast(device):
        logits = net(to_tensor(batch, device))
    return torch.softmax(logits.float(), dim=1)[:, 1].cpu().numpy()


def segment_array(model: SegmentationModel, rgb: np.ndarray, tile: int = 512, halo: int = 32,
                  batch_size: int = 4, device="cpu") -> np.ndarray:
    """Mitosis probability for a whole RGB image already at the model's mpp, tile by tile.

    Tiles overlap by ``halo`` pixels and only each tile's core is kept, so the
    result does not depend on where tile borders fall (beyond float noise).
    """
    if tile % model.multiple or tile <= 2 * halo:
        raise WsimitoError(f"tile {tile} must be a multiple of {model.multiple} and exceed twice the halo {halo}")
    height, width = rgb.shape[:2]
    # A small image (a 128 px crop) needs only a small tile: padding it to a full tile costs up to 16x the work.
    needed = -(-(max(height, width) + 2 * halo) // model.multiple) * model.multiple
    tile = min(tile, needed)
    stride = tile - 2 * halo
    padded, corners = array_tiles(rgb, tile, halo)
    out = np.zeros((padded.shape[0] - 2 * halo, padded.shape[1] - 2 * halo), np.float32)
    for start in range(0, len(corners), batch_size):
        chunk = corners[start : start + batch_size]
        tiles = np.stack([padded[y : y + tile, x : x + tile] for y, x in chunk])
        probs = predict_proba(model, tiles, device)
        for (y, x), prob in zip(chunk, probs):
            out[y : y + stride, x : x + stride] = prob[halo : halo + stride, halo : halo + stride]
    return out[:height, :width]

