"""What the worker stores per frame: heatmaps and previews, encoded off the scoring thread."""

from __future__ import annotations

import warnings

import numpy as np

from workers.store import decode_heatmap, decode_preview, encode_heatmap, encode_preview, to_float16


def test_float16_cast_matches_numpy_bit_for_bit():
    rng = np.random.default_rng(0)
    edges = np.array([0.0, -0.0, 1e-8, 6e-8, 6.1e-5, 65504.0, 65520.0, 1e6, -1e6, np.inf, -np.inf, np.nan, 1 + 2**-11, 1 + 3 * 2**-11], np.float32)
    values = np.concatenate([edges, rng.normal(0, 100, 20000).astype(np.float32), rng.uniform(-1e-4, 1e-4, 5000).astype(np.float32)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NumPy warns on the overflow to inf
        expected = values.astype(np.float16)
    got = to_float16(values)
    assert got.dtype == np.float16 and np.array_equal(got.view(np.uint16), expected.view(np.uint16))
    strided = rng.normal(size=(16, 12, 3)).astype(np.float32)[::2, :, 2]  # a preview's Z: a strided view
    assert np.array_equal(to_float16(strided), strided.astype(np.float16))


def test_heatmap_and_preview_round_trip():
    rng = np.random.default_rng(1)
    pixel_map = rng.uniform(0, 3, (40, 30)).astype(np.float32)
    back = decode_heatmap(encode_heatmap(pixel_map))
    assert back.dtype == np.float32 and np.array_equal(back, pixel_map.astype(np.float16).astype(np.float32))
    rgb = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    xyz = rng.normal(size=(40, 30, 3)).astype(np.float32)
    jpeg, z = decode_preview(encode_preview(rgb, xyz, 20))
    assert jpeg[:2] == b"\xff\xd8" and z is not None and z.shape == (20, 15)
    assert np.array_equal(z, xyz[::2, ::2, 2].astype(np.float16).astype(np.float32))
