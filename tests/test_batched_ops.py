"""The batched tensor operations equal the per-frame NumPy/SciPy/PIL code they replaced (tests/reference_ops.py),
on frames of mixed sizes and shapes in one batch: background plane, pad and resize, geometry features, map
smoothing, maps back to each frame's pixels, the largest region of each map."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from duoscan.models.components import gaussian_blur, largest_regions
from duoscan.models.features import FeatureConfig, GeometryFeatures, local_mean
from duoscan.models.preprocess import PreprocessConfig, maps_to_frames, masked_median, prepare_batch
from duoscan.models.visible_depth import part_region, part_regions
from duoscan.producers.synthetic import render_part

from . import reference_ops as ref


@pytest.fixture(scope="module")
def mixed() -> list[tuple[np.ndarray, np.ndarray]]:
    """Square frames of three sizes (one of them the model's resolution, so not resized), two crops that are
    not square, a dented part and a frame without any 3D point, interleaved."""
    frames = []
    for i, (category, size) in enumerate([("hexnut", 112), ("ring", 96), ("puck", 128), ("hexnut", 96)]):
        part = render_part(category, np.random.default_rng(i), "dent" if i == 3 else "good", size)
        frames.append((part.rgb, part.xyz))
    wide = render_part("puck", np.random.default_rng(7), "good", 112)
    frames.insert(1, (wide.rgb[:, 10:90].copy(), wide.xyz[:, 10:90].copy()))
    frames.insert(3, (wide.rgb[20:100].copy(), wide.xyz[20:100].copy()))
    frames.append((frames[0][0], np.zeros_like(frames[0][1])))
    return frames


CFG = PreprocessConfig(resolution=112)


@pytest.fixture(scope="module")
def prepared(mixed):
    return prepare_batch(mixed, CFG)


def test_the_background_plane_and_resize_equal_the_per_frame_reference(mixed, prepared):
    for (rgb, xyz), new in zip(mixed, prepared, strict=True):
        old = ref.prepare(rgb, xyz, CFG)
        assert (new.orig_shape, new.pad) == (old.orig_shape, old.pad)
        assert np.array_equal(new.xyz, old.xyz) and np.array_equal(new.valid, old.valid)
        assert (new.plane is None) == (old.plane is None)
        if old.plane is not None:  # the same plane; a normal's sign is the solver's choice
            sign = np.sign(old.plane[:3] @ new.plane[:3])
            assert np.allclose(new.plane, sign * old.plane, atol=1e-9)
        assert np.array_equal(new.rgb, old.rgb)


def test_a_frame_prepares_the_same_alone_and_in_any_batch(mixed, prepared):
    alone = prepare_batch([mixed[2]], CFG)[0]
    assert np.array_equal(alone.xyz, prepared[2].xyz) and np.array_equal(alone.rgb, prepared[2].rgb)
    shuffled = prepare_batch(mixed[::-1], CFG)[::-1]
    assert all(np.array_equal(a.valid, b.valid) for a, b in zip(shuffled, prepared, strict=True))


def test_the_plane_is_removed_and_a_frame_without_points_has_none(prepared):
    assert prepared[-1].plane is None and not prepared[-1].valid.any()
    assert all(p.plane is not None and 0.05 < p.valid.mean() < 0.9 for p in prepared[:-1])


def test_geometry_features_equal_the_per_frame_reference(prepared):
    cfg = FeatureConfig(grid=14)
    feats, valid = GeometryFeatures(cfg)(prepared)
    for i, p in enumerate(prepared):
        old_feats, old_valid = ref.cell_average(ref.geometry_dense(p), p.valid, cfg.grid, cfg.min_cell_valid)
        assert np.array_equal(valid[i].numpy(), old_valid)
        assert np.allclose(feats[i].numpy(), old_feats, atol=1e-4), np.abs(feats[i].numpy() - old_feats).max()
    assert feats[:-1].abs().amax() > 0.01  # not trivially equal: the parts have shape


def test_maps_go_back_to_each_frames_own_pixels_as_before(prepared):
    maps = torch.rand(len(prepared), 112, 112, generator=torch.Generator().manual_seed(0))
    for m, p, new in zip(maps, prepared, maps_to_frames(maps, prepared), strict=True):
        old = ref.to_frame_resolution(m.numpy(), p)
        assert new.shape == old.shape == p.orig_shape
        assert np.allclose(new, old, atol=1e-4)


@pytest.mark.parametrize("sigma", [0.7, 4.0, 9.5])
def test_map_smoothing_equals_the_convolution_it_replaced(sigma):
    maps = torch.rand(3, 40, 56, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(gaussian_blur(maps, sigma), ref.gaussian_blur(maps, sigma), atol=1e-5)


def test_local_mean_equals_average_pooling_without_padding():
    maps = torch.rand(2, 5, 9, 7, generator=torch.Generator().manual_seed(2))
    pooled = F.avg_pool2d(maps, 3, stride=1, padding=1, count_include_pad=False)
    assert torch.allclose(local_mean(maps), pooled, atol=1e-6)


def test_regions_of_a_batch_equal_each_maps_own_labelling(prepared):
    """Maps of mixed sizes in one call: smooth random blobs, two equal regions (the first in raster order wins),
    a map with nothing above the threshold, and two consecutive maps lit at the same pixels (stacked, they touch:
    their regions must not merge)."""
    g = torch.Generator().manual_seed(3)
    maps = list(maps_to_frames(gaussian_blur(torch.rand(len(prepared), 112, 112, generator=g), 3.0), prepared))
    tie = np.zeros((30, 40), np.float32)
    tie[2:6, 30:34] = tie[20:24, 3:7] = 1.0
    maps += [tie, np.zeros((30, 40), np.float32), tie.copy(), np.ones((30, 40), np.float32)]
    threshold = float(np.quantile(np.concatenate([m.ravel() for m in maps[:-4]]), 0.9))
    got = largest_regions(maps, threshold)
    assert got == [ref.largest_region(m, threshold) for m in maps]
    assert got[-4] == (16, (30, 2, 33, 5)) and got[-3] is None and got[-1] == (1200, (0, 0, 39, 29))
    assert sum(r is not None for r in got[:-4]) >= len(prepared) - 1  # the blobs do light up


def test_masked_median_is_numpys_median_of_the_masked_entries():
    """Odd and even counts, ties at the two middle entries, distinct middle entries, one entry, none (NaN)."""
    g = np.random.default_rng(4)
    values = np.round(g.normal(size=(7, 41)), 1)  # rounded: many ties
    mask = g.random((7, 41)) < 0.6
    mask[1], mask[2], mask[3], mask[5], mask[6] = False, False, True, True, True
    mask[1, 5] = True  # one entry
    mask[5, 0] = mask[6, 0] = False  # 40 entries: the mean of the two middle ones
    values[5, 1:] = np.repeat([1.0, 2.0], 20)  # they differ...
    values[6, 1:] = np.repeat([1.0, 2.0, 2.0, 3.0], 10)  # ...or they tie
    got = masked_median(torch.from_numpy(values), torch.from_numpy(mask)).numpy()
    want = [np.median(v[m]) if m.any() else np.nan for v, m in zip(values, mask, strict=True)]
    assert np.array_equal(got, want, equal_nan=True), (got, want)
    assert got[5] == 1.5 and got[6] == 2.0


def test_silhouettes_of_a_batch_equal_scipys_closing_and_hole_filling(prepared):
    """The prepared parts, plus masks with a hole to fill and a cut the closing bridges, foreground on the image
    border, noise, none, and the first mask again right after the empty one (stacked, its hole would reach the
    border through the empty mask if the labelling joined them)."""
    g = np.random.default_rng(5)
    masks = [p.valid for p in prepared]
    frame = np.zeros((40, 40), bool)
    frame[5:30, 5:30] = True
    frame[12:18, 12:18] = False  # a hole
    frame[5:30, 20] = False  # a one-pixel cut the closing bridges
    edge = np.zeros((40, 40), bool)
    edge[:10, :] = edge[:, 35:] = True  # touching the border: eroded there
    masks = [*masks, frame, edge, g.random((40, 40)) < 0.45, np.zeros((40, 40), bool), frame.copy()]
    by_size = {}
    for m in masks:
        by_size.setdefault(m.shape, []).append(m)
    for group in by_size.values():
        got = part_regions(np.stack(group))
        for m, r in zip(group, got, strict=True):
            assert np.array_equal(r, ref.part_region(m))
    assert part_region(frame)[14, 14] and part_region(frame)[25, 20]  # the hole filled, the cut bridged
