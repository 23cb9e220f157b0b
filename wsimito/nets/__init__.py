"""Networks: the Haar wavelet transform, the phase-1 segmentation U-Nets (wavelet and plain), cnn.py for R-CNN."""

from wsimito.nets.unet import PlainUNet, WaveletUNet, build_segmentation_net
from wsimito.nets.wavelet import DWT, IWT, dwt_haar, iwt_haar

__all__ = ["DWT", "IWT", "dwt_haar", "iwt_haar", "WaveletUNet", "PlainUNet", "build_segmentation_net"]
