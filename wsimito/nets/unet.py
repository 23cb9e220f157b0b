"""Phase-1 segmentation networks: the paper's wavelet U-Net and a plain U-Net of the same size.

Lu (2021), "A Two-Phase Mitosis Detection Approach Based on U-Shaped Network": a U-shaped net whose blocks are
3x3 conv + BatchNorm + ReLU layers without pooling, which down-samples with the Haar DWT and up-samples with the
inverse transform (MWCNN, Liu et al. 2018), trained with pixel-wise softmax cross-entropy over two classes
(0 = background, 1 = mitosis) on the logits that ``forward`` returns.

Both nets share one skeleton and differ only in how they change resolution, so that a comparison between them
(the paper's Table 2) measures the wavelet transform and nothing else:

- wavelet: down = DWT (C -> 4C channels, nothing discarded); up = 1x1 conv to 4C then IWT.
- plain:   down = MaxPool2d(2) (C -> C, three quarters discarded); up = ConvTranspose2d(kernel 2, stride 2).

A 1x1 conv followed by the IWT is the same family of maps as a stride-2, 2x2 transposed convolution (each
coarse pixel writes a learned 2x2 patch), so the up paths match in power and almost in size; the nets differ in
parameters only by the wider first conv of each wavelet encoder block (it reads 4C channels) and 3C biases per
up-sampling.
"""

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from wsimito.nets.wavelet import DWT, IWT

__all__ = ["MITOSIS_CLASS", "WaveletUNet", "PlainUNet", "build_segmentation_net", "conv_block"]

MITOSIS_CLASS = 1
"""Index of the mitosis class in the logits (0 is background)."""


def conv_block(in_channels: int, out_channels: int, convs: int = 4) -> nn.Sequential:
    """``convs`` x (3x3 conv, padding 1 + BatchNorm + ReLU) at constant resolution: the paper's block."""
    layers = []
    for i in range(convs):
        # No conv bias: the BatchNorm that follows would cancel it.
        layers += [
            nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"segmentation {name} must be a positive integer, got {value!r}")
    return value


class _UNet(nn.Module):
    """Skeleton shared by both nets; subclasses say how to go down and up one level.

    Encoder level 0 is a block at full resolution; level k > 0 down-samples level k-1's output and applies a
    block. The decoder walks back up: up-sample to the level above, add that level's encoder output (the skip),
    apply a block. A final 1x1 conv gives ``num_classes`` logits at the input's resolution.

    The skip is added, not concatenated, as in MWCNN: the IWT is the exact inverse of the DWT, so the up-sampled
    features sit on the same pixel grid as the skip, and a sum keeps each decoder block at C_k input channels
    instead of 2 C_k, halving the first conv's cost at full resolution, where the net spends most of its time.
    """

    arch: str
    down_factor: int  # channel multiplier of the down-sampling step

    def __init__(
        self,
        in_channels: int = 3,
        widths: Sequence[int] = (32, 64, 128, 256),
        convs_per_block: int = 4,
        num_classes: int = 2,
    ):
        super().__init__()
        if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence) or not widths:
            raise ValueError(f"segmentation widths must be a non-empty list of positive integers, got {widths!r}")
        self.widths = tuple(_positive_int("widths entry", w) for w in widths)
        self.in_channels = _positive_int("in_channels", in_channels)
        self.convs_per_block = _positive_int("convs_per_block", convs_per_block)
        self.num_classes = _positive_int("num_classes", num_classes)
        if num_classes < 2:
            raise ValueError(f"segmentation num_classes must be at least 2 (background, mitosis), got {num_classes}")

        w = self.widths
        self.encoders = nn.ModuleList(
            [conv_block(in_channels, w[0], convs_per_block)]
            + [conv_block(self.down_factor * w[k - 1], w[k], convs_per_block) for k in range(1, len(w))]
        )
        self.downs = nn.ModuleList(self._down() for _ in w[1:])
        # Decoder modules are stored deepest first, the order forward() uses them.
        self.ups = nn.ModuleList(self._up(w[k + 1], w[k]) for k in reversed(range(len(w) - 1)))
        self.decoders = nn.ModuleList(conv_block(w[k], w[k], convs_per_block) for k in reversed(range(len(w) - 1)))
        self.head = nn.Conv2d(w[0], num_classes, 1)

    def _down(self) -> nn.Module:
        raise NotImplementedError

    def _up(self, in_channels: int, out_channels: int) -> nn.Module:
        raise NotImplementedError

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this (one halving per level below the top)."""
        return 2 ** (len(self.widths) - 1)

    @property
    def spec(self) -> dict:
        """The mapping :func:`build_segmentation_net` rebuilds this net from (store it beside the weights)."""
        return {
            "arch": self.arch,
            "widths": list(self.widths),
            "convs_per_block": self.convs_per_block,
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes, H, W) for images (N, in_channels, H, W)."""
        self._check_input(x)
        skips = []
        for k, encoder in enumerate(self.encoders):
            if k:
                x = self.downs[k - 1](x)
            x = encoder(x)
            skips.append(x)
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips[:-1])):
            x = decoder(up(x) + skip)
        return self.head(x)

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax mitosis probability (N, H, W) in float32, even under bf16 autocast.

        Mode and gradients are the caller's: call it under ``model.eval()`` and ``torch.inference_mode()``.
        """
        return torch.softmax(self(x).float(), dim=1)[:, MITOSIS_CLASS]

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} expects (N, {self.in_channels}, H, W) images, got shape {tuple(x.shape)}"
            )
        height, width = x.shape[-2:]
        m = self.size_multiple
        if height % m or width % m:
            raise ValueError(
                f"{type(self).__name__} with {len(self.widths)} levels needs height and width divisible by {m}, "
                f"got {height}x{width}; pad or crop the tile"
            )


class WaveletUNet(_UNet):
    """The paper's net: Haar DWT down, 1x1 conv + inverse DWT up, summed skips (see :class:`_UNet`)."""

    arch = "wavelet"
    down_factor = 4

    def _down(self) -> nn.Module:
        return DWT()

    def _up(self, in_channels: int, out_channels: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(in_channels, 4 * out_channels, 1), IWT())


class PlainUNet(_UNet):
    """Baseline with the same widths and blocks: max-pooling down, 2x2 stride-2 transposed conv up."""

    arch = "plain"
    down_factor = 1

    def _down(self) -> nn.Module:
        return nn.MaxPool2d(2)

    def _up(self, in_channels: int, out_channels: int) -> nn.Module:
        return nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)


_ARCHS = {cls.arch: cls for cls in (WaveletUNet, PlainUNet)}
_SPEC_KEYS = ("arch", "widths", "convs_per_block", "in_channels", "num_classes")


def build_segmentation_net(spec: Mapping) -> WaveletUNet | PlainUNet:
    """Build a net from the ``segmentation:`` mapping of a config (e.g. ``configs/seg-paper.yaml``).

    Keys: ``arch`` ("wavelet", the default, or "plain"), ``widths``, ``convs_per_block``, ``in_channels``,
    ``num_classes``; missing ones take the constructor defaults. An unknown key or arch is a ValueError naming
    it, so a typo never silently builds the default net.
    """
    if not isinstance(spec, Mapping):
        raise ValueError(f"segmentation spec must be a mapping, got {type(spec).__name__}")
    unknown = [key for key in spec if key not in _SPEC_KEYS]
    if unknown:
        raise ValueError(f"unknown segmentation key(s) {', '.join(map(repr, unknown))}; expected {list(_SPEC_KEYS)}")
    kwargs = dict(spec)
    arch = kwargs.pop("arch", WaveletUNet.arch)
    if arch not in _ARCHS:
        raise ValueError(f"unknown segmentation arch {arch!r}; expected one of {sorted(_ARCHS)}")
    return _ARCHS[arch](**kwargs)
