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

import torch

from wsimito import __version__
from wsimito.config import Config, load_config
from wsimito.errors import WsimitoError
from wsimito.outputs.atomic import atomic_directory, atomic_path
from wsimito.rcnn import RCNN
from wsimito.segmentation import SegmentationModel

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
        """Write the bundle as a whole: a folder filled under a temporary name replaces ``directory``.

        So a detector never mixes files of two saves. Being replaced whole, ``directory`` must be new, empty or
        a bundle: a folder holding anything else is refused, not deleted.
        """
        directory = Path(directory)
        if directory.exists() and (not directory.is_dir() or {p.name for p in directory.iterdir()} - set(_FILES)):
            raise WsimitoError(f"{directory}: exists and is not a detector bundle; a bundle replaces its folder "
                               "whole, so give a new or empty folder")
        meta = {"kind": "wsimito-detector", "wsimito_version": __version__, "mpp": self.mpp,
                "config": self.config.to_dict(), "notes": self.notes}
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


def _flatten(sections: dict) -> dict:
    return {f"{section}.{key}": value for section, values in sections.items() for key, value in values.items()}
