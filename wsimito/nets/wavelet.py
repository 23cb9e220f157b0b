"""Single-level 2-D Haar wavelet transform (DWT) and its inverse (IWT) as fixed torch modules.

The wavelet U-Net down-samples with the DWT and up-samples with the IWT (MWCNN, Liu et al. 2018): unlike
max-pooling the DWT loses nothing, it only moves each 2x2 neighbourhood into channels.

Layout. For an input of shape (N, C, H, W) with even H and W the DWT returns (N, 4C, H/2, W/2), grouped by
sub-band: channels ``k*C:(k+1)*C`` hold sub-band ``k`` of the C input channels, in the order

    k = 0  LL  approximation        (a + b + c + d) / 2
    k = 1  H   horizontal detail    (a + b - c - d) / 2    (top row minus bottom row)
    k = 2  V   vertical detail      (a - b + c - d) / 2    (left column minus right column)
    k = 3  D   diagonal detail      (a - b - c + d) / 2

where ``a, b`` are the top-left and top-right pixels and ``c, d`` the bottom-left and bottom-right pixels of each
2x2 block. This is exactly PyWavelets' ``pywt.dwt2(x, 'haar')`` -> ``cA, (cH, cV, cD)``, signs included (tested).
The MWCNN reference code orders its bands (LL, HL, LH, HH) = (LL, -V, -H, D); a network absorbs such signs
into its weights, so the choice matters only for comparing with other code.

The 4x4 matrix above is symmetric and orthonormal, so the transform preserves energy, the IWT is both its inverse
and its adjoint, and each transform's backward pass is the other transform. The forward passes use strided
slices and adds in the input's own dtype: no learned weights, no convolution that ``torch.autocast`` would
round to bf16, and the output keeps a channels-last input's memory format. On 2 CPU cores (4 x 32 x 512 x 512
float32) this ran 1.2-2x faster than a grouped stride-2 conv / transposed conv with fixed 2x2 filters, and
forward plus backward 1.5x faster than the conv and 2x faster than autograd through the slices.
"""

import torch
from torch import nn

__all__ = ["DWT", "IWT", "dwt_haar", "iwt_haar"]


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """The format to give a new tensor derived from ``x``, so channels-last stays channels-last."""
    if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _check_input(x: torch.Tensor, what: str) -> None:
    if x.dim() != 4:
        raise ValueError(f"{what} expects a 4-D tensor (N, C, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{what} expects a floating-point tensor, got {x.dtype}")


def _dwt(x: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    cc, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    # Butterfly: the 1/2 scale is applied on the quarter-size partial sums, and the results are written
    # straight into their channel blocks (no torch.cat copy).
    top_sum, top_diff = (a + b).mul_(0.5), (a - b).mul_(0.5)
    bottom_sum, bottom_diff = (cc + d).mul_(0.5), (cc - d).mul_(0.5)
    out = torch.empty((n, 4 * c, h // 2, w // 2), dtype=x.dtype, device=x.device, memory_format=_memory_format(x))
    torch.add(top_sum, bottom_sum, out=out[:, 0 * c : 1 * c])
    torch.sub(top_sum, bottom_sum, out=out[:, 1 * c : 2 * c])
    torch.add(top_diff, bottom_diff, out=out[:, 2 * c : 3 * c])
    torch.sub(top_diff, bottom_diff, out=out[:, 3 * c : 4 * c])
    return out


def _iwt(y: torch.Tensor) -> torch.Tensor:
    n, c4, h, w = y.shape
    c = c4 // 4
    ll, hh, vv, dd = (y[:, k * c : (k + 1) * c] for k in range(4))
    # The same butterfly backwards: the matrix is its own inverse.
    top_sum, bottom_sum = (ll + hh).mul_(0.5), (ll - hh).mul_(0.5)
    top_diff, bottom_diff = (vv + dd).mul_(0.5), (vv - dd).mul_(0.5)
    out = torch.empty((n, c, 2 * h, 2 * w), dtype=y.dtype, device=y.device, memory_format=_memory_format(y))
    torch.add(top_sum, top_diff, out=out[..., 0::2, 0::2])
    torch.sub(top_sum, top_diff, out=out[..., 0::2, 1::2])
    torch.add(bottom_sum, bottom_diff, out=out[..., 1::2, 0::2])
    torch.sub(bottom_sum, bottom_diff, out=out[..., 1::2, 1::2])
    return out


class _DWTFunction(torch.autograd.Function):
    """Haar DWT whose gradient is the IWT: cheaper than autograd through four strided slices."""

    @staticmethod
    def forward(ctx, x):
        return _dwt(x)

    @staticmethod
    def backward(ctx, grad):
        return _IWTFunction.apply(grad)


class _IWTFunction(torch.autograd.Function):
    """Haar IWT whose gradient is the DWT (the transform is orthonormal)."""

    @staticmethod
    def forward(ctx, y):
        return _iwt(y)

    @staticmethod
    def backward(ctx, grad):
        return _DWTFunction.apply(grad)


def dwt_haar(x: torch.Tensor) -> torch.Tensor:
    """Haar DWT: (N, C, H, W) with even H, W -> (N, 4C, H/2, W/2), sub-bands LL, H, V, D (module docstring)."""
    _check_input(x, "Haar DWT")
    height, width = x.shape[-2:]
    if height % 2 or width % 2:
        raise ValueError(
            f"Haar DWT needs an even height and width, got {height}x{width}; pad or crop the input "
            "(a network with L levels needs sizes divisible by 2**(L-1))"
        )
    return _DWTFunction.apply(x)


def iwt_haar(y: torch.Tensor) -> torch.Tensor:
    """Inverse Haar DWT: (N, 4C, h, w) in the sub-band order of :func:`dwt_haar` -> (N, C, 2h, 2w)."""
    _check_input(y, "Haar IWT")
    if y.shape[1] % 4:
        raise ValueError(f"Haar IWT needs a channel count divisible by 4 (four sub-bands), got {y.shape[1]}")
    return _IWTFunction.apply(y)


class DWT(nn.Module):
    """Module form of :func:`dwt_haar` (stride-2 down-sampling that keeps all information in 4x channels)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dwt_haar(x)


class IWT(nn.Module):
    """Module form of :func:`iwt_haar` (stride-2 up-sampling, exact inverse of :class:`DWT`)."""

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return iwt_haar(y)
