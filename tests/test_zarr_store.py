"""The probability pyramid's integer 2x2 mean is exactly the float mean rounded by np.rint (half to even)."""

import numpy as np

from wsimito.outputs.zarr_store import mean_2x2


def _float_mean(part):
    part = np.pad(part.astype(np.float32), ((0, part.shape[0] % 2), (0, part.shape[1] % 2)), mode="edge")
    return np.rint(part.reshape(part.shape[0] // 2, 2, part.shape[1] // 2, 2).mean(axis=(1, 3))).astype(np.uint8)


def test_every_sum_of_four_rounds_like_rint():
    sums = np.arange(4 * 255 + 1)
    quarters = np.stack([np.clip(sums - 255 * k, 0, 255) for k in range(4)]).astype(np.uint8)
    part = np.zeros((2, 2 * len(sums)), np.uint8)
    part[0, 0::2], part[0, 1::2], part[1, 0::2], part[1, 1::2] = quarters
    assert np.array_equal(mean_2x2(part), _float_mean(part))


def test_odd_edges_repeat_the_last_row_and_column():
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (3, 5), (896, 513), (513, 896)]:
        part = rng.integers(0, 256, shape, dtype=np.uint8)
        assert np.array_equal(mean_2x2(part), _float_mean(part)), shape
