"""What the worker stores per frame: heatmaps and previews."""

from __future__ import annotations

import warnings

import numpy as np

from duoscan.workers.store import decode_heatmap, decode_preview, encode_heatmap, encode_preview, to_float16


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


def test_float16_cast_matches_numpy_bit_for_bit():
    rng = np.random.default_rng(2)
    special = np.array(
        [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-8, 6e-5, -6e-8, 65504.0, 65519.0, 65520.0, 1e6, 1 / 3], np.float32
    )
    values = np.concatenate(
        [
            special,
            rng.normal(0, 100, 2 * 16384 + 5).astype(np.float32),
            rng.uniform(-1e-4, 1e-4, 1000).astype(np.float32),
        ]
    )
    with np.errstate(over="ignore"):
        assert np.array_equal(to_float16(values).view(np.uint16), values.astype(np.float16).view(np.uint16))
        strided = rng.normal(size=(50, 40, 3)).astype(np.float32)[::3, ::2, 2]  # as the preview takes Z
        out = to_float16(strided)
    assert out.dtype == np.float16 and out.shape == strided.shape
    assert np.array_equal(out.view(np.uint16), strided.astype(np.float16).view(np.uint16))
    frozen = values[:100].copy()
    frozen.flags.writeable = False  # as model outputs can be
    with np.errstate(over="ignore"), warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(to_float16(frozen).view(np.uint16), frozen.astype(np.float16).view(np.uint16))
