"""Where and how the networks run at inference: device, batch size, precision, memory format, copies.

One module decides these so that ``detect``, ``bench`` and the model code agree. On CPU nothing changes the
numbers: fp32, the nets as they are, a fixed batch. On CUDA: bf16 autocast on GPUs with bf16 tensor cores,
nets in channels-last (cuDNN's fastest layout for 3x3 convs), a batch sized from free GPU memory, and uint8
pixels copied through pinned memory without blocking the host thread.

Environment variables, for experiments and escape hatches rather than everyday use:

* ``WSIMITO_PRECISION``: ``auto`` (the above), ``fp32``, or ``bf16`` (also on CPU);
* ``WSIMITO_BATCH_SIZE``: tiles per batch instead of the chosen number (e.g. when another process shares the GPU);
* ``WSIMITO_COMPILE=1``: ``torch.compile`` the segmentation net. Off by default: whether it helps depends on
  the GPU and torch version, and it costs a compile per new batch shape; ``wsimito bench`` shows which is faster.
"""

from __future__ import annotations

import os
import re
import warnings

import numpy as np
import torch

from wsimito.errors import SettingsError, WsimitoError

CPU_BATCH = 8  # tiles per batch on CPU: larger batches are no faster there and hold more tiles in memory
MAX_BATCH = 32  # 32 tiles of 512 px keep a large GPU busy; more only delays results and grows host memory
RESERVED_BYTES = 2**30  # left free on the GPU for weights, cuDNN workspaces and the R-CNN
MEMORY_SHARE = 0.5  # of the rest, the share the batch's activations may use: the estimate is rough

_DEVICE = re.compile(r"(auto|cpu|cuda(:\d+)?)")
_PRECISIONS = ("auto", "fp32", "bf16")
_COMPILED: dict = {}  # net -> its compiled form, or None once compiling failed


def resolve_device(choice: str) -> torch.device:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` as a torch device; a SettingsError (exit 2) when it is not usable."""
    if not isinstance(choice, str) or not _DEVICE.fullmatch(choice):
        raise SettingsError(f"device {choice!r}: expected auto, cpu, cuda or cuda:N")
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(choice)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SettingsError(f"device {choice!r}: torch sees no CUDA GPU")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SettingsError(f"device {choice!r}: torch sees {torch.cuda.device_count()} CUDA GPU(s)")
    return device


def precision(device) -> str:
    """``bf16`` or ``fp32``: what the segmentation net runs in on ``device`` (see WSIMITO_PRECISION).

    bf16 only on GPUs with bf16 tensor cores: older ones emulate it, slower than fp32.
    """
    asked = os.environ.get("WSIMITO_PRECISION", "auto")
    if asked not in _PRECISIONS:
        raise WsimitoError(f"WSIMITO_PRECISION={asked!r}: expected one of {', '.join(_PRECISIONS)}")
    if asked != "auto":
        return asked
    device = torch.device(device)
    cuda = device.type == "cuda" and torch.cuda.is_available()
    return "bf16" if cuda and torch.cuda.get_device_capability(device)[0] >= 8 else "fp32"  # 8: Ampere


def autocast(device) -> torch.autocast:
    """The autocast context for the segmentation net: bf16 when ``precision`` says so, a no-op otherwise."""
    device = torch.device(device)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision(device) == "bf16")


def place(net: torch.nn.Module, device) -> torch.nn.Module:
    """``net`` moved to ``device`` in eval mode; on CUDA its 4-D weights channels-last, as ``to_tensor``'s input is.

    Cheap when already done (a walk over the parameters), so callers place the net before every batch.
    """
    device = torch.device(device)
    net.to(device).eval()
    if device.type == "cuda":
        net.to(memory_format=torch.channels_last)
    return net


def compiled(net: torch.nn.Module):
    """``net``, or its ``torch.compile`` form when WSIMITO_COMPILE=1; eager again, with a warning, if compiling fails.

    Compiled forms are kept for the process (a process loads its model once).
    """
    if os.environ.get("WSIMITO_COMPILE", "0") != "1":
        return net
    if net not in _COMPILED:
        _COMPILED[net] = torch.compile(net)
    fast = _COMPILED[net]
    if fast is None:
        return net

    def run(x):
        try:
            return fast(x)
        except Exception as exc:  # torch.compile fails in many ways (no compiler, unsupported op): run eagerly
            warnings.warn(f"torch.compile failed, running eagerly: {type(exc).__name__}: {str(exc)[:200]}",
                          stacklevel=2)
            _COMPILED[net] = None
            return net(x)

    return run


def to_device(array: np.ndarray, device) -> torch.Tensor:
    """``array`` as a tensor on ``device``, in one copy.

    On CUDA through pinned (page-locked) memory with ``non_blocking``: the host thread goes on to queue the
    kernels while the copy runs. Torch's caching host allocator keeps the pinned block until the copy is done,
    so it is never overwritten early.
    """
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    device = torch.device(device)
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def tile_batch_size(device, tile_size: int, widths, free_bytes: int | None = None) -> int:
    """Tiles per batch for a segmentation net with these level ``widths`` on ``device``.

    CPU: ``CPU_BATCH``. CUDA: what ``MEMORY_SHARE`` of the free memory (``free_bytes``, or what the GPU reports)
    less ``RESERVED_BYTES`` holds by ``tile_bytes``, between 1 and ``MAX_BATCH``. WSIMITO_BATCH_SIZE overrides.
    """
    if os.environ.get("WSIMITO_BATCH_SIZE"):
        return _positive_env("WSIMITO_BATCH_SIZE")
    device = torch.device(device)
    if device.type != "cuda":
        return CPU_BATCH
    if free_bytes is None:
        free_bytes = _free_bytes(device)
    per_tile = tile_bytes(tile_size, widths, 2 if precision(device) == "bf16" else 4)
    usable = MEMORY_SHARE * max(0, free_bytes - RESERVED_BYTES)
    return int(min(MAX_BATCH, max(1, usable // per_tile)))


def tile_bytes(tile_size: int, widths, bytes_per_value: int) -> int:
    """Estimated peak GPU memory of one tile through the U-Net at inference (no gradients kept).

    Live at the peak: the skips of every level the decoder has yet to use (level k: widths[k] channels at
    1/4**k of the pixels), and about five tensors of the widest level being worked on (the up-sampled input,
    the skip sum, conv and BatchNorm outputs, the next conv's output). Plus 64 bytes a pixel for the input
    (uint8, float, normalised) and the output (logits, softmax, the mitosis channel), all fp32.
    """
    per_level = [width / 4**level for level, width in enumerate(widths)]
    values = sum(per_level) + 5 * max(per_level)
    return int(tile_size**2 * (bytes_per_value * values + 64))


def _free_bytes(device: torch.device) -> int:
    """Free GPU memory, counting what torch's allocator caches but no tensor uses (it is ours to reuse)."""
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def _positive_env(name: str) -> int:
    value = os.environ[name]
    if not value.isdigit() or int(value) < 1:
        raise WsimitoError(f"{name}={value!r}: expected a positive whole number")
    return int(value)
