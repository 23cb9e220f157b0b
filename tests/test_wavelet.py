"""The Haar DWT/IWT: agreement with PyWavelets, exact inversion, orthonormality, gradients, dtypes, devices."""

import numpy as np
import pytest
import pywt
import torch

from wsimito.nets.wavelet import DWT, IWT, dwt_haar, iwt_haar

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
SHAPES = [(1, 1, 2, 2), (2, 3, 8, 10), (3, 5, 16, 6)]


def _float64(shape, seed=0):
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shape", SHAPES)
def test_sub_bands_equal_pywavelets_dwt2(shape):
    x = _float64(shape)
    y = dwt_haar(x)
    n, c, h, w = shape
    assert y.shape == (n, 4 * c, h // 2, w // 2)
    ca, (ch, cv, cd) = pywt.dwt2(x.numpy(), "haar")  # transforms the last two axes
    # Channel block k is sub-band k, in the order (cA, cH, cV, cD), with PyWavelets' signs (+1 each).
    for k, (name, reference) in enumerate([("cA", ca), ("cH", ch), ("cV", cv), ("cD", cd)]):
        np.testing.assert_allclose(y[:, k * c : (k + 1) * c].numpy(), reference, rtol=0, atol=1e-12, err_msg=name)


def test_documented_two_by_two_formulas():
    a, b, c, d = 1.0, 2.0, 4.0, 8.0  # top-left, top-right, bottom-left, bottom-right
    y = dwt_haar(torch.tensor([[[[a, b], [c, d]]]], dtype=torch.float64)).flatten().tolist()
    assert y == [(a + b + c + d) / 2, (a + b - c - d) / 2, (a - b + c - d) / 2, (a - b - c + d) / 2]


@pytest.mark.parametrize("shape", SHAPES)
def test_perfect_reconstruction_both_ways(shape):
    x = _float64(shape)
    torch.testing.assert_close(iwt_haar(dwt_haar(x)), x, rtol=0, atol=1e-12)
    y = _float64((shape[0], 4 * shape[1], shape[2], shape[3]), seed=1)
    torch.testing.assert_close(dwt_haar(iwt_haar(y)), y, rtol=0, atol=1e-12)


def test_orthonormal_energy_and_inner_products_preserved():
    x, z = _float64((2, 3, 12, 8), seed=0), _float64((2, 3, 12, 8), seed=1)
    assert torch.allclose((dwt_haar(x) ** 2).sum(), (x**2).sum(), rtol=1e-12)
    assert torch.allclose((dwt_haar(x) * dwt_haar(z)).sum(), (x * z).sum(), rtol=1e-12)


def test_gradcheck_through_dwt_and_iwt():
    x = _float64((2, 2, 6, 4)).requires_grad_()
    y = _float64((2, 8, 3, 2), seed=1).requires_grad_()
    assert torch.autograd.gradcheck(dwt_haar, (x,))
    assert torch.autograd.gradcheck(iwt_haar, (y,))
    assert torch.autograd.gradgradcheck(dwt_haar, (x,))
    assert torch.autograd.gradgradcheck(iwt_haar, (y,))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-5), (torch.float64, 1e-12), (torch.bfloat16, 0.1)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_dtypes_devices_and_memory_formats(device, dtype, atol, channels_last):
    x64 = _float64((2, 3, 8, 6))
    x = x64.to(device=device, dtype=dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    y = DWT()(x)
    assert y.dtype == dtype and y.device == x.device
    assert y.is_contiguous(memory_format=torch.channels_last) == channels_last
    torch.testing.assert_close(y.cpu().double(), dwt_haar(x64), rtol=0, atol=atol)
    back = IWT()(y)
    assert back.dtype == dtype and back.is_contiguous(memory_format=torch.channels_last) == channels_last
    torch.testing.assert_close(back.cpu().double(), x64, rtol=0, atol=atol)


def test_autocast_does_not_round_the_transform():
    x = _float64((1, 2, 4, 4)).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = dwt_haar(x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, dwt_haar(x), rtol=0, atol=0)


def test_modules_have_no_weights():
    assert list(DWT().parameters()) == [] and list(DWT().buffers()) == []
    assert list(IWT().parameters()) == [] and list(IWT().buffers()) == []


@pytest.mark.parametrize("size", [(7, 8), (8, 7), (5, 5)])
def test_odd_size_is_a_clear_error(size):
    with pytest.raises(ValueError, match="even height and width"):
        dwt_haar(torch.zeros(1, 1, *size))


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="divisible by 4"):
        iwt_haar(torch.zeros(1, 6, 2, 2))
    with pytest.raises(ValueError, match="4-D"):
        dwt_haar(torch.zeros(3, 4, 4))
    with pytest.raises(TypeError, match="floating-point"):
        dwt_haar(torch.zeros(1, 1, 4, 4, dtype=torch.int64))
