"""How RGB pixels become a network's input: one scaling and layout for the U-Nets and the region CNN."""

from __future__ import annotations

import numpy as np
import torch

from wsimito import devices


def to_tensor(batch: np.ndarray, device) -> torch.Tensor:
    """uint8 N x H x W x 3 RGB -> float N x 3 x H x W in [-1, 1], channels-last; the uint8 pixels are copied."""
    return normalize(devices.to_device(batch, device))


def normalize(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 N x H x W x 3 RGB on any device -> float N x 3 x H x W in [-1, 1], channels-last."""
    tensor = pixels.permute(0, 3, 1, 2).float()
    return (tensor / 127.5 - 1.0).contiguous(memory_format=torch.channels_last)
