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


def test_probability_pyramid_is_an_ome_zarr_image_at_the_model_mpp(tmp_path):
    """A maintained OME-NGFF validator accepts the pyramid; its levels carry the values written, at their µm."""
    import zarr
    from ome_zarr_models.v05.image import Image

    from wsimito.outputs.zarr_store import SlideStore

    rng = np.random.default_rng(1)
    store = SlideStore(tmp_path / "s.zarr", (600, 900), chunk=300, mpp=0.25)
    cores = {(r, c): rng.random((300, 300)) for r in range(2) for c in range(3)}
    for (row, col), core in cores.items():
        store.write_core(row, col, core)
    store.finish(np.zeros((0, 7)), {"slide": "s"})
    group = zarr.open_group(str(tmp_path / "s.zarr" / "probability"), mode="r")
    image = Image.from_zarr(group)  # raises on metadata that is not OME-NGFF 0.5
    datasets = image.ome_attributes.multiscales[0].datasets
    assert [d.path for d in datasets] == ["0", "1", "2"]
    scales = [d.coordinateTransformations[0].scale for d in datasets]
    assert scales == [[0.25, 0.25], [0.5, 0.5], [1.0, 1.0]]
    level0 = group["0"][:]
    assert np.array_equal(level0[300:600, 600:900], np.rint(cores[(1, 2)] * 255).astype(np.uint8))
    assert np.array_equal(group["1"][:], mean_2x2(level0))


_REWRITER = """
import sys
from wsimito.outputs.zarr_store import update_attributes
store, size = sys.argv[1], int(sys.argv[2])
for round in range(10**9):
    update_attributes(store, {"threshold": round % 2 / 2, "notes": str(round % 10) * size})
    print(round, flush=True)
"""


def test_attributes_rewritten_again_and_again_survive_a_kill_at_any_moment(tmp_path):
    """rethreshold rewrites a finished store's attributes: killed at any moment, the store stays complete, its
    attributes the old or the new (a writer that rewrites zarr.json in place, as zarr 3.0 does, fails here)."""
    import signal
    import subprocess
    import sys
    import time

    import zarr

    from wsimito.outputs.zarr_store import SlideStore, is_complete

    path = tmp_path / "s.zarr"
    store = SlideStore(path, (64, 64), chunk=64, mpp=0.25)
    store.write_core(0, 0, np.full((64, 64), 0.5))
    store.finish(np.zeros((0, 7)), {"slide": "s", "threshold": 0.0})
    rng = np.random.default_rng(0)
    for _ in range(6):
        process = subprocess.Popen([sys.executable, "-c", _REWRITER, str(path), str(4 * 2**20)],
                                   stdout=subprocess.PIPE, text=True)
        process.stdout.readline()  # one rewrite done: the next ones are under way
        time.sleep(rng.uniform(0, 0.2))
        process.send_signal(signal.SIGKILL)
        process.wait()
        attrs = zarr.open_group(str(path), mode="r").attrs.asdict()
        assert is_complete(path) and attrs["slide"] == "s" and attrs["threshold"] in (0.0, 0.5)
        assert len(attrs["notes"]) == 4 * 2**20 and len(set(attrs["notes"])) == 1
    assert zarr.open_group(str(path / "probability"), mode="r")["0"][0, 0] == 128
