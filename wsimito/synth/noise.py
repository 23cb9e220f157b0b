"""Deterministic randomness: hashes of integer positions, and the smooth noise built on them.

A scene must be a pure function of the seed and the position, so that any region renders on its own and agrees
with its neighbours to the pixel. The random numbers of lattice sites are therefore 64-bit hashes of (key,
indices), and smooth fields (tissue pieces, tumour nests, collagen fibres, inflammation, stain thickness) are
value noise on such lattices, sampled at absolute positions and interpolated. Textures for chromatin granules
and pixel noise are periodic, so they too can be indexed by absolute position.
"""

from __future__ import annotations

import zlib

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX_A = np.uint64(0xBF58476D1CE4E5B9)
_MIX_B = np.uint64(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1


def _mix(z):
    """splitmix64 finaliser: scrambles every bit of z into every other."""
    z = (z ^ (z >> np.uint64(30))) * _MIX_A
    z = (z ^ (z >> np.uint64(27))) * _MIX_B
    return z ^ (z >> np.uint64(31))


def hash64(key: int, *ints) -> np.ndarray:
    """64-bit hash of a key and integer arrays (broadcast): the random numbers of lattice sites."""
    with np.errstate(over="ignore"):
        h = np.asarray(key & _MASK64, dtype=np.uint64)
        for a in ints:
            a = np.asarray(a, dtype=np.int64).astype(np.uint64)
            h = _mix(h ^ _mix(a + _GOLDEN))
    return h


def u01(key: int, *ints) -> np.ndarray:
    """Uniform floats in [0, 1), one per broadcast element of ints."""
    return (hash64(key, *ints) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def subkey(key: int, name: str) -> int:
    """A key for one named random stream of a scene, so streams never share numbers."""
    return int(hash64(key, zlib.crc32(name.encode())))


def _smoothstep(t):
    """3t² - 2t³: interpolation weights with zero slope at the lattice points (no creases)."""
    return t * t * (3.0 - 2.0 * t)


def value_noise(u, v, key: int) -> np.ndarray:
    """Smooth noise in [0, 1] at lattice coordinates (u, v).

    A row u (1, W) with a column v (H, 1) is a grid and is interpolated separably (fast); other shapes hash a
    bounding box of lattice values when that is small, else the four corners of every point.
    """
    u = np.asarray(u, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    iu, iv = np.floor(u), np.floor(v)
    fu = _smoothstep(u - iu).astype(np.float32)
    fv = _smoothstep(v - iv).astype(np.float32)
    iu, iv = iu.astype(np.int64), iv.astype(np.int64)
    if u.ndim == 2 and v.ndim == 2 and u.shape[0] == 1 and v.shape[1] == 1:
        cols = np.arange(iu.min(), iu.max() + 2)
        rows = np.arange(iv.min(), iv.max() + 2)
        lattice = u01(key, rows[:, None], cols[None, :]).astype(np.float32)
        ci, ri = iu[0] - cols[0], iv[:, 0] - rows[0]
        along_x = lattice[:, ci] * (1 - fu) + lattice[:, ci + 1] * fu
        return along_x[ri] * (1 - fv) + along_x[ri + 1] * fv
    iu, iv, fu, fv = np.broadcast_arrays(iu, iv, fu, fv)
    c0, r0 = iu.min(initial=0), iv.min(initial=0)
    ncols, nrows = iu.max(initial=0) - c0 + 2, iv.max(initial=0) - r0 + 2
    if ncols * nrows <= iu.size:
        lattice = u01(key, np.arange(r0, r0 + nrows)[:, None], np.arange(c0, c0 + ncols)[None, :]).astype(np.float32)
        iu, iv = iu - c0, iv - r0

        def corner(dr, dc):
            return lattice[iv + dr, iu + dc]
    else:
        def corner(dr, dc):
            return u01(key, iv + dr, iu + dc).astype(np.float32)
    top = corner(0, 0) * (1 - fu) + corner(0, 1) * fu
    bottom = corner(1, 0) * (1 - fu) + corner(1, 1) * fu
    return top * (1 - fv) + bottom * fv


def fbm(x, y, key: int, scale: float, octaves: int = 3) -> np.ndarray:
    """Fractal value noise of positions in µm: features of about `scale` µm and finer, values around 0.5."""
    total, norm, amp = 0.0, 0.0, 1.0
    for octave in range(octaves):
        total = total + amp * value_noise(x / scale, y / scale, subkey(key, str(octave)))
        norm += amp
        amp *= 0.5
        scale *= 0.5
    return total / norm


def periodic_texture(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Blurred white noise that tiles seamlessly (blurred in the Fourier domain), scaled to unit deviation."""
    noise = rng.normal(0, 1, (size, size))
    freq = np.fft.fftfreq(size)
    gain = np.exp(-2 * (np.pi * sigma) ** 2 * (freq[:, None] ** 2 + freq[None, :] ** 2))
    texture = np.fft.ifft2(np.fft.fft2(noise) * gain).real
    return (texture / texture.std()).astype(np.float32)
