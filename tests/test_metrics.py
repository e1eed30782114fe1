"""Metrics against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from duoscan.models.metrics import area_to, aupro, image_auroc, pixel_auroc, pro_curve


def test_hand_computed_pro_curve():
    gt = [np.array([[0, 0, 1, 1]])]
    scores = [np.array([[0.1, 0.4, 0.3, 0.2]])]
    fpr, pro = pro_curve(gt, scores)
    # descending: 0.4 is a false positive, 0.3 and 0.2 cover the region, 0.1 is the other normal pixel
    assert fpr.tolist() == [0.0, 0.5, 0.5, 0.5, 1.0]
    assert pro.tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]
    assert aupro(gt, scores, 1.0) == pytest.approx(0.5)
    assert aupro(gt, scores, 0.3) == pytest.approx(0.0)


def test_regions_count_equally_whatever_their_size():
    gt = np.zeros((10, 10), np.uint8)
    gt[0, 0] = 1  # a one-pixel region
    gt[5:9, 5:9] = 1  # a 16-pixel region, 8-connected components
    amap = np.zeros((10, 10))
    amap[5:9, 5:9] = 1.0  # only the big region is found
    fpr, pro = pro_curve([gt], [amap])
    assert pro[1] == pytest.approx(0.5) and fpr[1] == 0.0  # half the regions at zero FPR


def test_perfect_map_scores_one():
    rng = np.random.default_rng(0)
    masks = [rng.random((32, 32)) > 0.9 for _ in range(4)]
    maps = [m.astype(float) + 0.01 * rng.random(m.shape) for m in masks]
    assert aupro(masks, maps, 0.3) == pytest.approx(1.0)
    assert aupro(masks, maps, 0.01) == pytest.approx(1.0)
    assert pixel_auroc(masks, maps) == pytest.approx(1.0)


def test_random_map_scores_about_0_15_at_30_percent():
    rng = np.random.default_rng(1)
    masks = []
    for _ in range(8):
        m = np.zeros((64, 64), bool)
        for _ in range(3):
            y, x = rng.integers(0, 56, 2)
            m[y : y + 8, x : x + 8] = True
        masks.append(m)
    maps = [rng.random(m.shape) for m in masks]
    # random scores: PRO ~ FPR, so the area to 0.3 is 0.3²/2 and normalised 0.15
    assert aupro(masks, maps, 0.3) == pytest.approx(0.15, abs=0.02)
    assert pixel_auroc(masks, maps) == pytest.approx(0.5, abs=0.03)


def test_area_interpolates_at_the_limit():
    x, y = np.array([0.0, 0.2, 0.4]), np.array([0.0, 1.0, 1.0])
    assert area_to(x, y, 0.3) == pytest.approx(0.1 + 0.1)
    assert area_to(x, y, 0.2) == pytest.approx(0.1)


def test_image_auroc_and_shape_checks():
    assert image_auroc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert np.isnan(image_auroc([0, 0], [0.1, 0.2]))
    with pytest.raises(ValueError, match="ground-truth resolution"):
        aupro([np.ones((4, 4))], [np.ones((2, 2))])
