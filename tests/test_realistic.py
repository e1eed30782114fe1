"""The realistic synthetic profile (400 px, six categories, subtle defects): masks, defect sizes, variety, layout.
Apart from tests/test_synthetic.py because its renders are the slow part of the synthetic tests."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from duoscan.producers.dataset import categories_in, iter_samples, write_synthetic_dataset
from duoscan.producers.realistic import REALISTIC_CATEGORIES, REALISTIC_DEFECTS, REALISTIC_SIZE, render_realistic


@functools.cache
def _render(category: str, defect: str = "good"):
    """One part per category (seed [9, i]) and its five defective twins: the same part, pose, light and sensor
    noise with one defect each. Both tests below read these renders (400 px, ~0.2 s each), rendered once."""
    return render_realistic(category, [9, REALISTIC_CATEGORIES.index(category)], defect)


@pytest.mark.parametrize("category", REALISTIC_CATEGORIES)
def test_realistic_masks_cover_exactly_the_rendered_defects(category):
    """A defective frame and its good twin differ only inside the mask, and almost everywhere inside it."""
    good = _render(category)
    assert good.rgb.shape == (REALISTIC_SIZE, REALISTIC_SIZE, 3) and not good.mask.any()
    for defect in REALISTIC_DEFECTS:
        bad = _render(category, defect)
        assert bad.mask.any()
        changed = (good.rgb != bad.rgb).any(2) | (good.xyz != bad.xyz).any(2)
        assert not (changed & ~bad.mask).any(), (
            f"{defect}: {int((changed & ~bad.mask).sum())} changed pixels outside the mask"
        )
        assert (changed & bad.mask).sum() >= 0.7 * bad.mask.sum(), (
            defect
        )  # the one-pixel shading ring may round away in uint8


def test_realistic_defects_are_small_and_the_profile_is_varied():
    areas = []
    for category in REALISTIC_CATEGORIES:
        z = _render(category).xyz[..., 2]
        on_part = np.abs(z - np.median(z[:10, :10][z[:10, :10] > 0])) > 2e-4
        areas += [_render(category, defect).mask.sum() / on_part.sum() for defect in REALISTIC_DEFECTS]
    assert 0.0002 < min(areas) and max(areas) < 0.04, areas  # ~0.1-2 % of the part (masks are dilated a pixel)
    a, b = _render("potato"), render_realistic("potato", [4, 1])
    assert np.abs(a.rgb.astype(int) - b.rgb.astype(int)).mean() > 5  # good parts differ in shape, colour and pose
    missing = (a.xyz == 0).all(2)
    assert 0 < missing.mean() < 0.2  # flanks, shadows and dropouts lose points, not the whole frame


def test_realistic_profile_writes_the_mvtec_layout(tmp_path):
    root = write_synthetic_dataset(
        tmp_path,
        ("bracket",),
        n_train=2,
        n_validation=1,
        n_test_good=1,
        n_test_per_defect=1,
        progress=False,
        profile="realistic",
    )
    assert categories_in(root) == ["bracket"]
    test = list(iter_samples(root, "bracket", "test"))
    assert {s.defect for s in test} == {"good", *REALISTIC_DEFECTS}
    assert all(
        s.rgb.shape[:2] == (REALISTIC_SIZE, REALISTIC_SIZE) and s.mask.any() == (s.defect != "good") for s in test
    )
    with pytest.raises(ValueError, match="unknown profile"):
        write_synthetic_dataset(tmp_path, profile="nope")


def test_standard_level_renders_the_same_parts_with_larger_deeper_defects(tmp_path):
    """The standard profile (the development benchmark) is the realistic profile's parts, light and sensor with
    defects a few times larger and deeper: the good frames are identical, every defect mask is larger on average
    and a dent reaches deeper."""
    key = [9, REALISTIC_CATEGORIES.index("bracket")]
    assert np.array_equal(render_realistic("bracket", key).rgb, render_realistic("bracket", key, level="standard").rgb)
    hard = [_render("bracket", d).mask.sum() for d in REALISTIC_DEFECTS]
    standard = [render_realistic("bracket", key, d, level="standard").mask.sum() for d in REALISTIC_DEFECTS]
    assert np.mean(standard) > 1.5 * np.mean(hard), (hard, standard)
    good = _render("bracket").xyz[..., 2]
    depth = lambda part: np.abs(part.xyz[..., 2] - good)[part.mask & (part.xyz[..., 2] > 0) & (good > 0)].max()  # noqa: E731
    assert depth(render_realistic("bracket", key, "dent", level="standard")) > depth(_render("bracket", "dent"))
    with pytest.raises(ValueError, match="defect level"):
        render_realistic("bracket", key, "dent", level="extreme")
    root = write_synthetic_dataset(
        tmp_path,
        ("gear",),
        n_train=1,
        n_validation=1,
        n_test_good=1,
        n_test_per_defect=1,
        progress=False,
        profile="standard",
    )
    assert {s.defect for s in iter_samples(root, "gear", "test")} == {"good", *REALISTIC_DEFECTS}


def test_standard_profile_counts_give_bootstrap_room():
    """At least 40 good and 60 defective test frames per category by default (intervals need them)."""
    from duoscan.producers.dataset import PROFILES

    spec = PROFILES["standard"]
    assert spec["n_test_good"] >= 40 and spec["n_test_per_defect"] * len(spec["defects"]) >= 60
