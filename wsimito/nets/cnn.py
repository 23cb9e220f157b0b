"""The R-CNN's feature network: a small CNN of our own for warped mitosis-sized regions.

Girshick et al. fine-tune an ImageNet AlexNet; a mitosis is a 10-20 µm object
seen at 40x, so a few conv stages on a small warp (e.g. 48x48 px) suffice and
train from scratch on thousands of regions. ``features`` are what the linear
SVM and the box regressor see; the classification head exists to train them.
"""

from __future__ import annotations

import torch
from torch import nn


class RegionCNN(nn.Module):
    """Conv stages (3x3 conv + BatchNorm + ReLU, then 2x2 max-pool), global average pool, linear head."""

    def __init__(self, widths=(16, 32, 64, 128), in_channels: int = 3, num_classes: int = 2):
        super().__init__()
        layers, channels = [], in_channels
        for index, width in enumerate(widths):
            layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True)]
            if index < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            channels = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(channels, num_classes)
        self.feature_dim = channels

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, feature_dim) descriptors of warped regions, x: (N, 3, S, S) in [-1, 1]."""
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
