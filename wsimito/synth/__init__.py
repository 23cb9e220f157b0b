"""Synthetic H&E images and whole-slide TIFFs whose mitoses are known to the pixel.

Tests, demos, benchmarks and phase-1 training need images with exact ground truth, at any size, reproducibly.
The modules follow a picture's making:

- :mod:`.noise`: hashes of positions and smooth noise, so that everything is a pure function of seed and place;
- :mod:`.stain`: per-image stain vectors and scanner, and Beer-Lambert from concentrations to RGB;
- :mod:`.sprites`: nuclei, mitotic figures and dead cells drawn into a concentration canvas;
- :mod:`.scene`: where everything is, and the rendering of any level-0 pixel box;
- :mod:`.fields`: high-power fields with a chosen number of mitoses, written as PNGs with centroids;
- :mod:`.layout`: a slide's glass (tissue pieces, pen, scanner border) and its scene;
- :mod:`.slide`: the pyramidal TIFF, written tile by tile in flat memory, and its truth.
"""

from wsimito.synth.fields import SynthField, make_field, mitosis_boxes, write_fields
from wsimito.synth.slide import SynthSlideTruth, write_slide

__all__ = ["SynthField", "SynthSlideTruth", "make_field", "mitosis_boxes", "write_fields", "write_slide"]
