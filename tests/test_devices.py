"""Device decisions (wsimito.devices) and inference on CPU and, where there is one, a CUDA GPU.

The ``test_cuda_*`` tests are skipped without a GPU; ``benchmarks/gpu_check.sh`` runs them where there is one.
"""

import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.conftest import REPO, smooth_texture
from wsimito import devices
from wsimito.bundle import MitosisModel
from wsimito.config import DetectorConfig, SegmentationNetConfig
from wsimito.errors import WsimitoError
from wsimito.inference import detect_tiles
from wsimito.nets.inputs import normalize
from wsimito.rcnn import RCNN
from wsimito.segmentation import SegmentationModel, predict_proba

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="only where torch sees no CUDA GPU")
DEFAULT_WIDTHS = SegmentationNetConfig().widths


@pytest.fixture(autouse=True)
def _no_overrides(monkeypatch):
    for name in ("WSIMITO_PRECISION", "WSIMITO_BATCH_SIZE", "WSIMITO_COMPILE"):
        monkeypatch.delenv(name, raising=False)


def _segmentation(widths=(4, 8, 16)) -> SegmentationModel:
    torch.manual_seed(0)
    return SegmentationModel.new({"arch": "wavelet", "widths": list(widths), "convs_per_block": 1}, 0.25)


def _tiles(count=2, size=128) -> np.ndarray:
    return np.stack([smooth_texture(size, size, seed=seed) for seed in range(count)])


def _rcnn(seed=0) -> RCNN:
    """An R-CNN with random weights and linear parts: its scores are meaningless, but depend on every feature."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    rcnn = RCNN(DetectorConfig(cnn_widths=(8, 16), warp=32, context=4))
    dim = rcnn.cnn.feature_dim
    rcnn.feature_mean_, rcnn.feature_scale_ = np.zeros(dim), np.full(dim, 0.1)
    rcnn.svm_coef_, rcnn.svm_intercept_, rcnn.platt_ = rng.normal(size=dim), 0.0, (1.0, 0.0)
    rcnn.ridge_coef_, rcnn.ridge_intercept_ = rng.normal(size=(4, dim)) * 1e-3, np.zeros(4)
    return rcnn


PROPOSALS = [np.array([[10, 10, 40, 40], [50, 60, 80, 90.0], [52, 58, 84, 88]]), np.zeros((0, 4)),
             np.array([[5, 5, 30, 20.0]])]


# --- device resolution ---------------------------------------------------------------------------------------


def test_cpu_and_auto():
    assert devices.resolve_device("cpu") == torch.device("cpu")
    assert devices.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("choice", ["gpu", "CUDA", "cuda:x", "cuda:-1", "cpu:0", "", " cpu"])
def test_a_bad_device_is_a_one_line_error_naming_it(choice):
    with pytest.raises(WsimitoError) as error:
        devices.resolve_device(choice)
    message = str(error.value)
    assert repr(choice) in message and "expected auto, cpu, cuda or cuda:N" in message and "\n" not in message


def test_a_gpu_index_beyond_the_gpus_is_an_error():
    with pytest.raises(WsimitoError, match="'cuda:99'"):
        devices.resolve_device("cuda:99")


@no_cuda
def test_cuda_without_a_gpu_is_a_one_line_cli_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "wsimito", "bench", "--device", "cuda", "--model", str(tmp_path)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode != 0
    assert result.stderr.strip() == "wsimito: error: device 'cuda': torch sees no CUDA GPU"


# --- batch size ----------------------------------------------------------------------------------------------


def test_batch_size_from_free_memory(monkeypatch):
    monkeypatch.setenv("WSIMITO_PRECISION", "bf16")
    per_tile = devices.tile_bytes(512, DEFAULT_WIDTHS, 2)
    assert 50e6 < per_tile < 400e6  # the paper's widths at 512 px in bf16: about 130 MB

    def batch(free_bytes, widths=DEFAULT_WIDTHS):
        return devices.tile_batch_size("cuda", 512, widths, free_bytes=free_bytes)

    ten_tiles = devices.RESERVED_BYTES + 10 * per_tile / devices.MEMORY_SHARE
    assert batch(ten_tiles) == 10
    assert batch(ten_tiles - 1) == 9
    assert batch(80 * 2**30) == devices.MAX_BATCH  # an 80 GB GPU: the cap
    assert batch(devices.RESERVED_BYTES) == batch(0) == 1  # nothing free: the floor, one tile at a time
    assert batch(ten_tiles, widths=[2 * w for w in DEFAULT_WIDTHS]) < 10  # a wider net: fewer tiles
    monkeypatch.setenv("WSIMITO_PRECISION", "fp32")
    assert batch(ten_tiles) < 10  # fp32 activations: twice the bytes


def test_cpu_batch_is_fixed():
    assert devices.tile_batch_size("cpu", 512, DEFAULT_WIDTHS, free_bytes=0) == devices.CPU_BATCH
    assert devices.tile_batch_size("cpu", 512, DEFAULT_WIDTHS, free_bytes=10**12) == devices.CPU_BATCH


def test_batch_size_override(monkeypatch):
    monkeypatch.setenv("WSIMITO_BATCH_SIZE", "5")
    assert devices.tile_batch_size("cuda", 512, DEFAULT_WIDTHS, free_bytes=0) == 5
    for bad in ("0", "x", "-2"):
        monkeypatch.setenv("WSIMITO_BATCH_SIZE", bad)
        with pytest.raises(WsimitoError, match="WSIMITO_BATCH_SIZE"):
            devices.tile_batch_size("cpu", 512, DEFAULT_WIDTHS)


# --- precision and numbers on CPU -----------------------------------------------------------------------------


def test_fp32_on_cpu_unless_asked(monkeypatch):
    assert devices.precision("cpu") == "fp32"
    monkeypatch.setenv("WSIMITO_PRECISION", "fp16")
    with pytest.raises(WsimitoError, match="WSIMITO_PRECISION='fp16'"):
        devices.precision("cpu")


def test_cpu_probabilities_are_plain_fp32():
    """No autocast, no layout change on CPU: exactly what the net gives in fp32."""
    model, tiles = _segmentation(), _tiles()
    with torch.no_grad():
        logits = model.net.eval()(normalize(torch.from_numpy(tiles)))
    reference = torch.softmax(logits, dim=1)[:, 1].numpy()
    proba = predict_proba(model, tiles, "cpu")
    assert proba.dtype == np.float32 and proba.shape == (2, 128, 128)
    assert np.array_equal(proba, reference)
    assert next(model.net.parameters()).is_contiguous()  # not converted to channels-last


def test_bf16_when_asked_on_cpu(monkeypatch):
    """The autocast path itself, run on CPU: float32 out, close to fp32 but not the same."""
    model, tiles = _segmentation(), _tiles()
    reference = predict_proba(model, tiles, "cpu")
    monkeypatch.setenv("WSIMITO_PRECISION", "bf16")
    proba = predict_proba(model, tiles, "cpu")
    assert proba.dtype == np.float32
    assert not np.array_equal(proba, reference) and np.abs(proba - reference).max() < 0.1


def test_regions_of_a_batch_are_scored_as_one_image_at_a_time():
    rcnn, tiles = _rcnn(), _tiles(3)
    together = rcnn.predict_many(tiles, PROPOSALS)
    for rgb, proposals, (boxes, scores) in zip(tiles, PROPOSALS, together):
        alone_boxes, alone_scores = rcnn.predict(rgb, proposals)
        assert len(scores) == len(alone_scores)
        np.testing.assert_allclose(scores, alone_scores, rtol=1e-6)
        np.testing.assert_allclose(boxes, alone_boxes, rtol=1e-6)
    assert len(together[1][0]) == 0 and len(together[0][0]) > 0


# --- CUDA: skipped without a GPU ------------------------------------------------------------------------------

# Probabilities, bf16 GPU against fp32 CPU. The tiny model's maps vary little (0.01-0.02), so also their
# correlation: a layout or copy mistake loses the pattern. bf16 autocast on CPU gives 4e-4, 9e-5 and 0.996.
BF16_MAX_DIFF, BF16_MEAN_DIFF, BF16_MIN_CORRELATION = 0.1, 0.01, 0.9
FP32_SCORE_DIFF = 1e-3  # R-CNN scores, GPU (cuDNN's default TF32 convolutions) against CPU; TF32 emulated: 6e-5


@cuda
def test_cuda_bf16_probabilities_agree_with_cpu_fp32(tiny_model):
    model, tiles = MitosisModel.load(tiny_model), _tiles(4, 256)
    reference = predict_proba(model.segmentation, tiles, "cpu")
    proba = predict_proba(model.segmentation, tiles, "cuda")
    assert devices.precision("cuda") == "bf16" and proba.dtype == np.float32
    assert np.abs(proba - reference).max() < BF16_MAX_DIFF
    assert np.abs(proba - reference).mean() < BF16_MEAN_DIFF
    assert np.corrcoef(proba.ravel(), reference.ravel())[0, 1] > BF16_MIN_CORRELATION
    conv = next(m for m in model.segmentation.net.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_cuda and conv.weight.is_contiguous(memory_format=torch.channels_last)


@cuda
def test_cuda_rcnn_scores_agree_with_cpu():
    tiles = _tiles(3)
    reference = _rcnn().predict_many(tiles, PROPOSALS)
    on_gpu = _rcnn()
    on_gpu.device = "cuda"
    for (boxes, scores), (ref_boxes, ref_scores) in zip(on_gpu.predict_many(tiles, PROPOSALS), reference):
        np.testing.assert_allclose(scores, ref_scores, atol=FP32_SCORE_DIFF)
        np.testing.assert_allclose(boxes, ref_boxes, atol=0.5)


def _dark_fields(count=4, size=256) -> np.ndarray:
    """Synthetic H&E at 0.25 µm/px: nuclei and mitotic figures for the dark-disk model to detect."""
    from wsimito.synth import make_field

    return np.stack([make_field((size, size), mpp=0.25, seed=seed).image for seed in range(count)])


def assert_same_detections(found, reference, box_px=2.0, share=0.95):
    """Per tile, the same detections: as many (bf16 can tip a faint region over or under the proposal
    threshold: ``1 - share`` of them at most), and ``share`` of the reference boxes with a counterpart within
    ``box_px`` (it can move a region's edge by a pixel) scored the same to FP32_SCORE_DIFF. bf16 on CPU: the
    maps differ by 0.009 at most, every box is the same."""
    for (prob, boxes, scores), (ref_prob, ref_boxes, ref_scores) in zip(found, reference):
        assert prob.dtype == np.float32 and prob.shape == ref_prob.shape
        assert np.abs(prob - ref_prob).mean() < BF16_MEAN_DIFF
        assert abs(len(boxes) - len(ref_boxes)) <= (1 - share) * len(ref_boxes)
        if not len(ref_boxes):
            continue
        distance = np.abs(ref_boxes[:, None] - boxes[None]).max(axis=2).reshape(len(ref_boxes), -1)
        twin = distance.argmin(axis=1) if len(boxes) else np.zeros(len(ref_boxes), int)
        matched = distance.min(axis=1) <= box_px if len(boxes) else np.zeros(len(ref_boxes), bool)
        assert matched.mean() >= share, distance.min(axis=1)
        np.testing.assert_allclose(scores[twin[matched]], ref_scores[matched], atol=FP32_SCORE_DIFF)


def test_bf16_detections_agree_with_fp32_on_cpu(dark_disk_model, monkeypatch):
    """The CUDA test's comparison, run on CPU with bf16 autocast asked for: it holds where the GPU is absent,
    and the model finds plenty to compare (an untrained one finds nothing, and empty equals empty)."""
    tiles = _dark_fields()
    reference = detect_tiles(MitosisModel.load(dark_disk_model), tiles, "cpu")
    assert sum(len(boxes) for _, boxes, _ in reference) >= 8
    monkeypatch.setenv("WSIMITO_PRECISION", "bf16")
    assert_same_detections(detect_tiles(MitosisModel.load(dark_disk_model), tiles, "cpu"), reference)


@cuda
def test_cuda_detect_tiles_end_to_end(dark_disk_model):
    """The loaded bundle on the GPU finds what it finds on the CPU: the dark-disk model detects the dark nuclei
    and figures of synthetic fields, so there is something to compare."""
    tiles = _dark_fields()
    reference = detect_tiles(MitosisModel.load(dark_disk_model), tiles, "cpu")
    assert sum(len(boxes) for _, boxes, _ in reference) >= 8
    assert_same_detections(detect_tiles(MitosisModel.load(dark_disk_model, "cuda"), tiles, "cuda"), reference)


@cuda
def test_cuda_memory_estimate_leaves_room():
    """The paper's widths at 512 px: the chosen batch runs and fits in free memory with the reserve to spare.

    The estimate itself may be off by less than 1 / MEMORY_SHARE (on CPU, measured op by op, it is 1.2x the
    bf16 peak); the numbers are printed for the record.
    """
    model = _segmentation(DEFAULT_WIDTHS)
    devices.place(model.net, "cuda")
    free, _ = torch.cuda.mem_get_info()
    batch = devices.tile_batch_size("cuda", 512, DEFAULT_WIDTHS)
    tiles = np.full((batch, 512, 512, 3), 200, np.uint8)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    predict_proba(model, tiles, "cuda")
    used = torch.cuda.max_memory_allocated() - before
    estimate = devices.tile_bytes(512, DEFAULT_WIDTHS, 2)
    print(f"\nbatch {batch}: {used / batch / 2**20:.0f} MiB a tile measured, {estimate / 2**20:.0f} MiB estimated")
    assert used / batch < estimate / devices.MEMORY_SHARE
    assert used + devices.RESERVED_BYTES < free
