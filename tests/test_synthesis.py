"""Synthetic anomaly generators and visible depth (BridgeNet's inputs; reusable by any method)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from duoscan.models.preprocess import Prepared, PreprocessConfig, prepare
from duoscan.models.synthesis import (
    MultiScaleGaussianGenerator,
    UnifiedTextureGenerator,
    perlin,
    perlin_mask,
    procedural_texture,
)
from duoscan.models.textures import photo_library, photo_texture
from duoscan.models.visible_depth import FOREGROUND_FLOOR, depth_image, part_region, visible_depth
from duoscan.producers.synthetic import render_part


def _prepared(seed: int = 0) -> Prepared:
    part = render_part("puck", np.random.default_rng(seed), size=96)
    return prepare(part.rgb, part.xyz, PreprocessConfig(resolution=96))


def test_perlin_noise_is_smooth_bounded_and_seeded():
    a = perlin((50, 70), (4, 5), np.random.default_rng(1))
    assert a.shape == (50, 70) and np.abs(a).max() <= 1.5 and a.std() > 0.05
    assert np.abs(np.diff(a, axis=1)).max() < 0.3  # neighbours are close: noise, not static
    assert np.array_equal(a, perlin((50, 70), (4, 5), np.random.default_rng(1)))


def test_perlin_mask_stays_inside_the_region_with_bounded_area():
    region = np.zeros((64, 64), bool)
    region[10:50, 20:60] = True
    rng = np.random.default_rng(0)
    for _ in range(10):
        m = perlin_mask(region, rng)
        assert m.any() and not (m & ~region).any() and m.sum() <= 0.3 * region.sum()
    assert not perlin_mask(np.zeros((8, 8), bool), rng).any()


def test_procedural_textures_are_images():
    for seed in range(8):
        t = procedural_texture((32, 40), np.random.default_rng(seed))
        assert t.shape == (32, 40, 3) and t.dtype == np.float32 and 0 <= t.min() and t.max() <= 1


def test_visible_depth_shows_the_part_above_its_background():
    p = _prepared()
    d = visible_depth(p)
    region = part_region(p.valid)
    assert d.shape == p.valid.shape and d.dtype == np.float32
    assert (
        (d[~region] == 0).all()
        and (d[region] >= FOREGROUND_FLOOR - 1e-6).all()
        and d.max() == pytest.approx(1.0, abs=1e-3)
    )
    assert depth_image(p).shape == (*p.valid.shape, 3)
    # holes inside the part are filled from their neighbours
    holed = Prepared(p.rgb, p.xyz.copy(), p.valid.copy(), p.orig_shape, p.pad, p.plane)
    ys, xs = np.nonzero(p.valid)
    cy, cx = int(ys.mean()), int(xs.mean())
    holed.valid[cy - 2 : cy + 3, cx - 2 : cx + 3] = False
    holed.xyz[~holed.valid] = 0
    assert visible_depth(holed)[cy, cx] == pytest.approx(d[cy, cx], abs=0.1)
    # nothing measured: an empty image, no error
    empty = Prepared(p.rgb, np.zeros_like(p.xyz), np.zeros_like(p.valid), p.orig_shape, p.pad, None)
    assert not visible_depth(empty).any()


def test_a_dent_lowers_visible_depth():
    part = render_part("puck", np.random.default_rng(0), size=96)
    d0 = visible_depth(prepare(part.rgb, part.xyz, PreprocessConfig(resolution=96)))
    bumped = part.xyz.copy()
    valid = np.any(bumped != 0, axis=2)
    ys, xs = np.nonzero(valid)
    cy, cx = int(ys.mean()), int(xs.mean())
    bumped[cy - 3 : cy + 4, cx - 3 : cx + 4, 2] += 0.003  # 3 mm away from the camera
    d1 = visible_depth(prepare(part.rgb, bumped, PreprocessConfig(resolution=96)))
    assert d1[cy, cx] < d0[cy, cx] - 0.2


@pytest.mark.parametrize("target", ["rgb", "depth", "both"])
def test_texture_generator_changes_only_the_target_inside_the_mask(target):
    p = _prepared()
    d = visible_depth(p)
    region = part_region(p.valid)
    a = UnifiedTextureGenerator(donor_share=0.0)(p.rgb, d, region, np.random.default_rng(3), target=target)
    assert a.mask.any() and not (a.mask & ~region).any()
    assert set(a.changed) == {"rgb", "depth"} if target == "both" else a.changed == (target,)
    rgb_diff = np.abs(a.rgb.astype(int) - p.rgb).sum(2) > 0
    depth_diff = np.abs(a.depth - d) > 0
    assert not (rgb_diff & ~a.mask).any() and not (depth_diff & ~a.mask).any()
    assert rgb_diff.any() == (target != "depth") and depth_diff.any() == (target != "rgb")


def test_texture_generator_can_use_other_good_frames():
    p, q = _prepared(0), _prepared(1)
    d = visible_depth(p)
    a = UnifiedTextureGenerator(donor_share=1.0)(
        p.rgb, d, part_region(p.valid), np.random.default_rng(0), donors=[(q.rgb, visible_depth(q))], target="both"
    )
    assert a.mask.any() and (a.rgb != p.rgb).any()


def test_gaussian_generator_depth_and_features():
    p = _prepared()
    d = visible_depth(p)
    region = part_region(p.valid)
    a = MultiScaleGaussianGenerator().depth(p.rgb, d, region, np.random.default_rng(0))
    assert a.changed == ("depth",) and (a.rgb == p.rgb).all()
    assert a.mask.any() and not (a.mask & ~region).any()
    assert np.abs(a.depth - d)[a.mask].mean() > np.abs(a.depth - d)[region & ~a.mask].mean()
    x = torch.zeros(3, 8, 12, 12)
    noisy, masks = MultiScaleGaussianGenerator().features(x, torch.Generator().manual_seed(0))
    assert masks.shape == (3, 12, 12) and (masks.flatten(1).sum(1) > 0).all()
    changed = noisy.abs().sum(1) > 0
    assert torch.equal(changed, masks > 0)  # noise exactly inside the masks


def test_anomaly_preview_png(dataset, tmp_path):
    from typer.testing import CliRunner

    from duoscan.cli import app

    out = tmp_path / "preview.png"
    res = CliRunner().invoke(
        app, ["synth-anomalies", "--data", str(dataset), "--category", "ring", "--out", str(out), "--n", "2"]
    )
    assert res.exit_code == 0, res.output
    from PIL import Image

    assert Image.open(out).size[1] > 2 * 100


def test_photo_textures_come_from_the_installed_wheels():
    """Real photographs (scikit-image's and scikit-learn's sample images) are a texture family of their own."""
    assert len(photo_library()) >= 10
    rng = np.random.default_rng(0)
    for shape in ((32, 32), (24, 40)):
        t = photo_texture(shape, rng)
        assert t is not None and t.shape == (*shape, 3) and t.dtype == np.float32 and 0 <= t.min() and t.max() <= 1
    assert photo_texture((32, 32), np.random.default_rng(1)).std() > 0.01  # a crop with content, not a flat fill
    p = _prepared()
    d = visible_depth(p)
    a = UnifiedTextureGenerator(donor_share=0.0, fill="photo")(p.rgb, d, part_region(p.valid), rng, target="both")
    assert a.mask.any() and (a.rgb != p.rgb)[a.mask].any() and (a.depth != d)[a.mask].any()
    with pytest.raises(ValueError):
        UnifiedTextureGenerator(fill="dtd")
