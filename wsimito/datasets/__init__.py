"""Readers for labelled mitosis data, each turning one on-disk format into plain arrays.

Pixel labels (phase 1): :mod:`.pixel_lists` (MITOS 2012 CSVs), :mod:`.masks`
(images with mask PNGs, ``wsimito synth`` output). Point labels: :mod:`.points`.
"""

from wsimito.datasets.masks import LabelledImage, find_labelled_images

__all__ = ["LabelledImage", "find_labelled_images"]
