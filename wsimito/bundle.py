"""The detector bundle ``detect`` loads: segmentation net + R-CNN + the config and mpp they share.

A bundle is a directory: ``segmentation.pt`` (phase 1), ``rcnn.pt`` (phase 2:
one R-CNN, or the members of an ensemble), and ``model.json`` (wsimito version,
mpp, config, training notes). Both ``.pt`` files load with ``weights_only=True``.
Its hash (over the three files) is what every output records as the model's
identity.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from wsimito import __version__
from wsimito.config import Config, DetectorConfig, SegmentationNetConfig, build_section
from wsimito.ensemble import RCNNEnsemble
from wsimito.errors import BundleError, WsimitoError
from wsimito.outputs.atomic import atomic_directory, atomic_path
from wsimito.rcnn import RCNN
from wsimito.segmentation import SegmentationModel

_FILES = ("model.json", "segmentation.pt", "rcnn.pt")
# The R-CNN part of a bundle as rcnn.pt holds it (RCNN.state); the CNN's weights and the fitted linear parts.
# An ensemble's rcnn.pt holds {"members": [one such state per member]} (RCNNEnsemble.state).
_RCNN_KEYS = ("config", "cnn", "arrays", "svm_intercept", "platt")
# Detector settings that inference reads from model.json, not from rcnn.pt: the proposals (inference.propose)
# and the model's own threshold (train-det chooses it after the R-CNN is saved in memory).
_MODEL_JSON_DETECTOR_KEYS = ("proposals", "proposal_threshold", "proposal_margin_um", "min_box_um", "max_box_um",
                             "threshold")


@dataclass
class MitosisModel:
    segmentation: SegmentationModel
    rcnn: RCNN | RCNNEnsemble
    config: Config
    notes: dict = field(default_factory=dict)

    @property
    def mpp(self) -> float:
        return self.segmentation.mpp

    @property
    def settings(self) -> Config:
        """The settings this bundle's parts run with, which ``config`` may not say alone: the net is built from
        segmentation.pt's own spec at its own mpp, the R-CNN scores with rcnn.pt's settings, and the proposals
        and the default threshold come from ``config`` (model.json)."""
        proposals = {key: getattr(self.config.detector, key) for key in _MODEL_JSON_DETECTOR_KEYS}
        return replace(self.config, tiling=replace(self.config.tiling, mpp=self.mpp),
                       segmentation=build_section(SegmentationNetConfig, self.segmentation.spec, "segmentation spec"),
                       detector=replace(self.rcnn.config, **proposals))

    def save(self, directory) -> Path:
        """Write the bundle as a whole: a folder filled under a temporary name replaces ``directory``.

        So a detector never mixes files of two saves. Being replaced whole, ``directory`` must be new, empty or
        a bundle: a folder holding anything else is refused, not deleted.
        """
        directory = Path(directory)
        if directory.exists() and (not directory.is_dir() or {p.name for p in directory.iterdir()} - set(_FILES)):
            raise WsimitoError(f"{directory}: exists and is not a detector bundle; a bundle replaces its folder "
                               "whole, so give a new or empty folder")
        # the settings the parts run with: a config whose segmentation section is not the net's would mislead
        meta = {"kind": "wsimito-detector", "wsimito_version": __version__, "mpp": self.mpp,
                "config": self.settings.to_dict(), "notes": self.notes}
        with atomic_directory(directory) as staged:
            for name, write in (
                ("segmentation.pt", lambda p: torch.save(self.segmentation.state(), p)),
                ("rcnn.pt", lambda p: torch.save(self.rcnn.state(), p)),
                ("model.json", lambda p: p.write_text(json.dumps(meta, indent=2))),
            ):
                # torch.save names the archive inside after the file written: ".segmentation.pt" from
                # atomic_path's temporary name, as in every bundle so far (the bytes, so bundle_sha256, stay)
                with atomic_path(staged / name) as tmp:
                    write(tmp)
        return directory

    @classmethod
    def load(cls, directory, device="cpu") -> "MitosisModel":
        directory = Path(directory)
        missing = [name for name in _FILES if not (directory / name).exists()]
        if missing:
            raise WsimitoError(f"{directory}: not a wsimito detector bundle (missing {', '.join(missing)})")
        meta = _read_meta(directory / "model.json")
        config = _checked(directory / "model.json", meta, lambda: build_section(Config, meta["config"], "config"))
        try:
            segmentation = SegmentationModel.load(directory / "segmentation.pt", device)
        except WsimitoError as exc:
            raise BundleError(str(exc)) from None
        return cls(segmentation, _load_rcnn(directory / "rcnn.pt", device), config, meta.get("notes", {}))


def bundle_sha256(directory) -> str:
    """One hash over the bundle's files, in a fixed order."""
    digest = hashlib.sha256()
    for name in _FILES:
        digest.update(name.encode())
        digest.update((Path(directory) / name).read_bytes())
    return digest.hexdigest()


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("kind") != "wsimito-detector":
        raise BundleError(f"{path}: not a wsimito detector's model.json (no kind 'wsimito-detector')")
    if not isinstance(meta.get("config"), dict):
        raise BundleError(f"{path}: the required key 'config' is missing or not a mapping")
    return meta


def _load_rcnn(path: Path, device) -> RCNN | RCNNEnsemble:
    """Read onto the CPU whatever ``device``: the fitted linear parts become numpy arrays, and RCNN.from_state
    moves the CNN to ``device``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BundleError(f"{path}: not a wsimito R-CNN file ({str(exc).splitlines()[0][:120]})") from None
    if isinstance(state, dict) and isinstance(state.get("members"), list) and state["members"]:
        members = [_rcnn_from_state(f"{path} (member {i + 1})", member, device)
                   for i, member in enumerate(state["members"])]
        try:
            return RCNNEnsemble(members)
        except ValueError as exc:
            raise BundleError(f"{path}: {exc}") from None
    return _rcnn_from_state(path, state, device)


def _rcnn_from_state(path, state, device) -> RCNN:
    missing = [key for key in _RCNN_KEYS if not isinstance(state, dict) or key not in state]
    if missing or not isinstance(state["config"], dict):
        raise BundleError(f"{path}: the required key(s) {', '.join(missing or ['config'])} are missing or not what "
                          "an R-CNN of wsimito holds")
    _checked(path, state, lambda: build_section(DetectorConfig, state["config"], "config"))
    try:
        return RCNN.from_state(state, device)
    except (RuntimeError, KeyError, TypeError, ValueError) as exc:  # weights of another shape, a renamed array
        raise BundleError(f"{path}: does not load ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None


def _checked(path: Path, meta: dict, build):
    """``build()``, its errors (an unknown, renamed or mistyped key) named with the bundle file and the version
    that wrote it: a key only a newer wsimito knows is an unknown one here, and a key with a default that is
    missing is not an error (a bundle from before that key was added)."""
    try:
        return build()
    except WsimitoError as exc:
        written = meta.get("wsimito_version")
        version = f"; written by wsimito {written}, this is {__version__}" if written and written != __version__ else ""
        raise BundleError(f"{path}: {exc}{version}") from None
