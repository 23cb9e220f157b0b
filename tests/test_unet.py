"""The phase-1 segmentation nets: construction from the YAML configs, shapes, sizes, training, inference modes."""

import copy
import functools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from wsimito.nets import PlainUNet, WaveletUNet, build_segmentation_net

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ARCHS = ["wavelet", "plain"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These nets and images are small: one thread is about as fast, and 10x faster than two when other jobs
    share the cores (OpenMP workers wait on each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _spec(config: str, **overrides) -> dict:
    with open(CONFIGS / f"seg-{config}.yaml") as f:
        return {**yaml.safe_load(f)["segmentation"], **overrides}


def _net(config: str, arch: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_segmentation_net(_spec(config, arch=arch))


def _images(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def _n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("config", ["paper", "tiny"])
@pytest.mark.parametrize("arch", ARCHS)
def test_both_archs_build_from_the_yaml_configs(config, arch):
    spec = _spec(config, arch=arch)
    net = build_segmentation_net(spec)
    assert isinstance(net, {"wavelet": WaveletUNet, "plain": PlainUNet}[arch])
    assert net.spec == spec  # the spec rebuilds the same net, e.g. from a model file
    convs = [m for m in net.encoders[0] if isinstance(m, nn.Conv2d)]
    assert len(convs) == spec["convs_per_block"] and all(c.kernel_size == (3, 3) for c in convs)
    assert _spec("paper")["arch"] == "wavelet" and _spec("tiny")["arch"] == "wavelet"


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(("config", "shape"), [("tiny", (1, 3, 32, 32)), ("tiny", (2, 3, 48, 20)),
                                               ("tiny", (1, 3, 4, 8)), ("paper", (1, 3, 8, 8)),
                                               ("paper", (2, 3, 24, 40))])  # fmt: skip
def test_logits_and_probabilities_have_the_input_size(arch, config, shape):
    net = _net(config, arch).eval()
    x = _images(*shape)
    with torch.inference_mode():
        logits = net(x)
        proba = net.predict_proba(x)
    n, _, h, w = shape
    assert logits.shape == (n, 2, h, w) and proba.shape == (n, h, w)
    torch.testing.assert_close(proba, torch.softmax(logits, 1)[:, 1])
    assert proba.min() >= 0 and proba.max() <= 1


@pytest.mark.parametrize("arch", ARCHS)
def test_sizes_the_levels_cannot_halve_are_a_clear_error(arch):
    net = _net("tiny", arch)  # three levels: multiples of 4
    assert net.size_multiple == 4 and _net("paper", arch).size_multiple == 8
    for h, w in [(30, 32), (32, 34), (6, 8)]:
        with pytest.raises(ValueError, match=rf"divisible by 4, got {h}x{w}"):
            net(torch.zeros(1, 3, h, w))
    with pytest.raises(ValueError, match=r"expects \(N, 3, H, W\)"):
        net(torch.zeros(1, 4, 32, 32))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"arch": "wavelet", "width": [8]}, "'width'"),
        ({"arch": "mwcnn"}, "'mwcnn'"),
        ({"widths": []}, "widths"),
        ({"widths": [8, 0]}, "widths"),
        ({"widths": "8,16"}, "widths"),
        ({"convs_per_block": 0}, "convs_per_block"),
        ({"num_classes": 1}, "num_classes"),
        ({"in_channels": 2.5}, "in_channels"),
    ],
)
def test_bad_specs_are_errors_naming_the_key(spec, message):
    with pytest.raises(ValueError, match=message):
        build_segmentation_net(spec)


def _block_params(c_in, c_out, convs):
    # 3x3 convs without bias, each followed by BatchNorm (weight and bias).
    return 9 * c_in * c_out + 2 * c_out + (convs - 1) * (9 * c_out * c_out + 2 * c_out)


def _expected_params(arch, widths, convs, in_channels=3, num_classes=2):
    down = 4 if arch == "wavelet" else 1  # DWT stacks four sub-bands; max-pooling keeps C
    total = _block_params(in_channels, widths[0], convs) + num_classes * (widths[0] + 1)
    for k in range(1, len(widths)):
        total += _block_params(down * widths[k - 1], widths[k], convs)  # encoder level k
        total += _block_params(widths[k - 1], widths[k - 1], convs)  # decoder level k-1
        up_bias = 4 * widths[k - 1] if arch == "wavelet" else widths[k - 1]  # 1x1 conv to 4C vs ConvTranspose2d
        total += 4 * widths[k] * widths[k - 1] + up_bias
    return total


@pytest.mark.parametrize("config", ["paper", "tiny"])
def test_parameter_counts_wavelet_vs_plain(config):
    spec = _spec(config)
    widths, convs = spec["widths"], spec["convs_per_block"]
    wavelet, plain = _n_params(_net(config, "wavelet")), _n_params(_net(config, "plain"))
    assert wavelet == _expected_params("wavelet", widths, convs)
    assert plain == _expected_params("plain", widths, convs)
    # The whole difference: each wavelet encoder block's first conv reads 4C sub-band channels instead of C,
    # and each 1x1 conv before the IWT has 4C biases where the transposed conv has C.
    pairs = list(zip(widths, widths[1:]))
    assert wavelet - plain == sum(27 * a * b + 3 * a for a, b in pairs)
    if config == "paper":
        assert (wavelet, plain) == (4_852_002, 3_690_114)  # wavelet about 1.31x plain


def _blob_image(size=64, radius=12, seed=0):
    """One noisy grey image with a bright disc (the 'mitosis') and its mask."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    mask = (yy - 0.6 * size) ** 2 + (xx - 0.35 * size) ** 2 <= radius**2
    image = 0.3 + 0.1 * torch.randn(3, size, size, generator=torch.Generator().manual_seed(seed))
    image[:, mask] += 0.5
    return image[None], mask[None].long()


@functools.cache
def _trained(arch: str):
    """The tiny net after 40 Adam steps of softmax cross-entropy on one blob image (shared by two tests)."""
    net = _net("tiny", arch)
    image, mask = _blob_image()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(40):
        loss = F.cross_entropy(net(image), mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net, image, mask, loss.item()


def _dice(predicted, mask):
    return (2 * (predicted & mask.bool()).sum() / (predicted.sum() + mask.sum())).item()


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_net_overfits_one_image_with_softmax_cross_entropy(arch):
    net, image, mask, loss = _trained(arch)
    with torch.no_grad():
        dice = _dice(net.predict_proba(image) > 0.5, mask)
    assert dice > 0.9, f"Dice {dice:.3f} after 40 steps, loss {loss:.3f}"


def _recalibrated(net: nn.Module, images: torch.Tensor) -> nn.Module:
    """A copy in eval mode whose BatchNorm statistics are exactly those of ``images`` (40 steps are too few
    for the running averages to settle)."""
    net = copy.deepcopy(net)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: one pass gives the batch statistics
    with torch.no_grad():
        net.train()(images)
    return net.eval()


@pytest.mark.parametrize("arch", ARCHS)
def test_bf16_autocast_agrees_roughly_with_fp32(arch):
    net, image, mask, _ = _trained(arch)
    net = _recalibrated(net, image)
    with torch.inference_mode():
        reference = net.predict_proba(image)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = net(image)
            proba = net.predict_proba(image)
    assert logits.dtype == torch.bfloat16 and proba.dtype == torch.float32
    assert _dice(reference > 0.5, mask) > 0.9
    assert (proba - reference).abs().max() < 0.1
    assert _dice(proba > 0.5, reference > 0.5) > 0.98


def _with_running_stats(net: nn.Module) -> nn.Module:
    """Train-mode passes over random batches so that BatchNorm's running statistics are not the defaults."""
    with torch.no_grad():
        for seed in range(3):
            net(_images(4, 3, 32, 32, seed=seed))
    return net.eval()


@pytest.mark.parametrize("arch", ARCHS)
def test_channels_last_gives_the_same_result(arch):
    net = _with_running_stats(_net("tiny", arch))
    x = _images(2, 3, 32, 32, seed=5)
    with torch.inference_mode():
        reference = net(x)
        net = net.to(memory_format=torch.channels_last)
        out = net(x.to(memory_format=torch.channels_last))
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_eval_output_does_not_depend_on_the_rest_of_the_batch(arch):
    net = _with_running_stats(_net("tiny", arch))
    batch = _images(3, 3, 32, 32, seed=7)
    with torch.inference_mode():
        together = net(batch)
        alone = torch.cat([net(batch[i : i + 1]) for i in range(3)])
        shuffled = net(batch[[2, 0, 1]])[[1, 2, 0]]
    torch.testing.assert_close(alone, together, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(shuffled, together, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_fixed_seed_is_deterministic_on_cpu(arch):
    first, second = _net("tiny", arch, seed=3), _net("tiny", arch, seed=3)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    x = _images(2, 3, 16, 16)
    first_out, second_out = first(x), second(x)
    first_out.sum().backward()
    second_out.sum().backward()
    assert torch.equal(first_out, second_out)
    assert all(torch.equal(p.grad, q.grad) for p, q in zip(first.parameters(), second.parameters()))
    assert not torch.equal(_net("tiny", arch, seed=4).head.weight, first.head.weight)
