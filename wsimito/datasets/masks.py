"""Images with pixel labels, found on disk by their naming conventions.

Supported layouts (any mix within a folder):

* ``NAME.png|jpg|bmp|tif`` with ``NAME_mask.png`` (0 = background, non-zero = mitosis),
  which is also what ``wsimito synth`` writes (its ``fields.json`` gives the mpp);
* MITOS 2012: ``NAME.bmp|jpg|png|tif`` with the pixel-list ``NAME.csv``; a multispectral
  frame ``NAME_BBFF.bmp`` also pairs with ``NAME_BBFF'.csv`` (same NAME, another band/focus);
* masks in a folder of their own, one ``NAME.png`` per image anywhere under it (the AMi-Br
  chromosome masks, ``ami-br-masks/Train``): pass that folder as ``masks``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsimito.datasets.pixel_lists import pixel_lists_to_mask, read_pixel_lists
from wsimito.errors import WsimitoError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_BAND_FOCUS = re.compile(r"_\d{4}$")


@dataclass(frozen=True)
class LabelledImage:
    """An image file and where its pixel labels are; ``load`` decodes both."""

    image: Path
    label: Path
    mpp: float | None  # from the dataset's own metadata, if it records one

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """(RGB uint8 H x W x 3, mask uint8 H x W with 1 = mitosis)."""
        rgb = read_rgb(self.image)
        if self.label.suffix.lower() == ".csv":
            mask = pixel_lists_to_mask(read_pixel_lists(self.label), rgb.shape[:2], source=str(self.label))
        else:
            mask = (read_gray(self.label) > 0).astype(np.uint8)
            if mask.shape != rgb.shape[:2]:
                raise WsimitoError(f"{self.label}: mask is {mask.shape[::-1]}, "
                                   f"image {self.image.name} is {rgb.shape[1::-1]}")
        return rgb, mask


def find_labelled_images(paths, masks=None) -> list[LabelledImage]:
    """Every labelled image in the given folders and files, sorted by path; an error if none.

    ``masks``: a folder holding a mask ``NAME.png`` for each image ``NAME.*`` (searched recursively); then
    only the images with a mask there are labelled, so a data set's own split folder chooses them.
    """
    by_name = _masks_by_name(masks) if masks is not None else None
    found = []
    for path in map(Path, paths):
        if not path.exists():
            raise WsimitoError(f"{path}: not found")
        candidates = sorted(path.iterdir()) if path.is_dir() else [path]
        mpp = _folder_mpp(path if path.is_dir() else path.parent)
        for image in candidates:
            if image.suffix.lower() not in IMAGE_SUFFIXES or image.stem.endswith("_mask"):
                continue
            label = _label_for(image) if by_name is None else by_name.get(image.stem)
            if label is not None:
                found.append(LabelledImage(image, label, mpp))
            elif not path.is_dir() and by_name is None:
                raise WsimitoError(f"{image}: no pixel labels beside it ({image.stem}_mask.png or {image.stem}.csv)")
    if not found:
        raise WsimitoError(f"no labelled images in {', '.join(map(str, paths))} "
                           "(need NAME_mask.png or NAME.csv beside each image)")
    return sorted(found, key=lambda item: str(item.image))


def _masks_by_name(folder) -> dict[str, Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise WsimitoError(f"{folder}: not a folder of masks")
    return {path.stem: path for path in sorted(folder.rglob("*.png"))}


def _label_for(image: Path) -> Path | None:
    mask = image.with_name(image.stem + "_mask.png")
    if mask.exists():
        return mask
    csv = image.with_suffix(".csv")
    if csv.exists():
        return csv
    if _BAND_FOCUS.search(image.stem):
        base = _BAND_FOCUS.sub("", image.stem)
        siblings = sorted(image.parent.glob(base + "_[0-9][0-9][0-9][0-9].csv"))
        if siblings:
            return siblings[0]
    return None


def _folder_mpp(folder: Path) -> float | None:
    """The mpp ``wsimito synth`` records in ``fields.json``, if this folder has one."""
    meta = folder / "fields.json"
    if meta.exists():
        value = json.loads(meta.read_text()).get("mpp")
        return float(value) if value else None
    return None


def read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def read_gray(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("L"))
