"""What the worker stores per frame: heatmaps and previews."""

from __future__ import annotations

import numpy as np

from workers.store import decode_heatmap, decode_preview, encode_heatmap, encode_preview


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
