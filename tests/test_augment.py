"""The half-resolution augmentation: what a 20x scan enlarged to the model's mpp loses, and nothing else."""

import numpy as np

from wsimito.augment import half_resolution


def test_half_resolution_removes_single_pixel_detail_and_keeps_the_size():
    checker = (np.indices((32, 32)).sum(axis=0) % 2 * 255).astype(np.uint8)
    image = np.repeat(checker[:, :, None], 3, axis=2)
    blurred = half_resolution(image, np.random.default_rng(0), fraction=1.0)
    assert blurred.shape == image.shape
    assert blurred.std() < 10 < image.std()  # the 1 px pattern averages out to grey


def test_half_resolution_at_fraction_zero_is_the_identity_and_draws_nothing():
    image = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    rng = np.random.default_rng(2)
    assert half_resolution(image, rng, fraction=0.0) is image
    assert rng.random() == np.random.default_rng(2).random()
