"""Synthetic parts: defects of each modality, masks, MVTec 3D-AD layout on disk."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from duoscan.producers.dataset import categories_in, iter_samples, write_synthetic_dataset
from duoscan.producers.synthetic import CATEGORIES, DEFECT_MODALITY, DEFECTS, _apply_defect, render_part


@pytest.mark.parametrize("category", CATEGORIES)
def test_parts_are_aligned_and_reproducible(category):
    a = render_part(category, np.random.default_rng(3), "good", 64)
    b = render_part(category, np.random.default_rng(3), "good", 64)
    assert a.rgb.shape == (64, 64, 3) and a.rgb.dtype == np.uint8
    assert a.xyz.shape == (64, 64, 3) and a.xyz.dtype == np.float32
    assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.xyz, b.xyz)
    assert not a.mask.any()
    missing = ~np.any(a.xyz != 0, axis=2)
    assert 0 < missing.mean() < 0.2  # some dropout, as real sensors have
    z = a.xyz[..., 2][~missing]
    assert 0.28 < z.min() < z.max() < 0.32  # metres from the camera


def test_categories_differ():
    parts = [render_part(c, np.random.default_rng(0), "good", 64) for c in CATEGORIES]
    colours = [p.rgb.reshape(-1, 3).mean(0) for p in parts]
    assert min(np.abs(colours[i] - colours[j]).sum() for i in range(3) for j in range(i + 1, 3)) > 10


@pytest.mark.parametrize("defect", DEFECTS)
def test_defects_touch_the_modalities_they_claim(defect):
    rng = np.random.default_rng(1)
    s = 64
    yy, xx = np.mgrid[:s, :s]
    h = np.where(np.hypot(yy - 32, xx - 32) < 24, 5.0, 0.0)
    albedo = np.full((s, s, 3), 0.6)
    h0, a0 = h.copy(), albedo.copy()
    mask = _apply_defect(rng, defect, h, albedo, h > 0.5)
    assert mask.sum() >= 3
    geometry_changed = not np.allclose(h, h0)
    colour_changed = not np.allclose(albedo, a0)
    expected = DEFECT_MODALITY[defect]
    assert geometry_changed == (expected in ("3d", "both"))
    assert colour_changed == (expected in ("2d", "both"))


@pytest.mark.parametrize("defect", DEFECTS)
def test_defect_masks_are_on_the_part(defect):
    part = render_part("puck", np.random.default_rng(7), defect, 96)
    assert part.mask.sum() > 5
    assert part.defect == defect


def test_dataset_layout_matches_mvtec_3d_ad(tmp_path):
    root = write_synthetic_dataset(
        tmp_path, ("ring",), size=48, n_train=3, n_validation=2, n_test_good=2, n_test_per_defect=1, progress=False
    )
    assert categories_in(root) == ["ring"]
    assert len(list((root / "ring/train/good/rgb").glob("*.png"))) == 3
    assert len(list((root / "ring/validation/good/xyz").glob("*.tiff"))) == 2
    for d in DEFECTS:
        assert (root / f"ring/test/{d}/gt/000.png").exists()
    xyz = tifffile.imread(root / "ring/train/good/xyz/000.tiff")
    assert xyz.shape == (48, 48, 3) and xyz.dtype == np.float32
    test = list(iter_samples(root, "ring", "test"))
    assert len(test) == 2 + len(DEFECTS)
    assert {s.defect for s in test} == {"good", *DEFECTS}
    assert all(s.mask.any() == (s.defect != "good") for s in test)


def test_missing_gt_means_no_defect(tmp_path):
    root = write_synthetic_dataset(
        tmp_path, ("hexnut",), size=32, n_train=1, n_validation=1, n_test_good=1, n_test_per_defect=0, progress=False
    )
    for p in (root / "hexnut/test/good/gt").glob("*.png"):
        p.unlink()
    [sample] = list(iter_samples(root, "hexnut", "test"))
    assert sample.mask.shape == (32, 32) and not sample.mask.any()
