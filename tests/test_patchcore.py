"""PatchCore with late fusion: fit/score/save/load per modality, the fusion's normalisation, the
degraded path without depth, and a worker serving it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from duoscan.evaluate import evaluate_model, train_model
from duoscan.models import load_model
from duoscan.models.fusion import fuse, map_quantile
from duoscan.producers.dataset import iter_dataset

from .conftest import served_puck_results


@pytest.fixture(scope="module")
def patchcore_models(dataset, tmp_path_factory, feature_cache):
    out = tmp_path_factory.mktemp("patchcore")
    return {
        m: train_model(dataset, "puck", "patchcore", m, progress=False, cache_dir=feature_cache).save(
            out / f"puck-{m}.pt"
        )
        for m in ("rgb", "xyz", "both")
    }


def test_patchcore_modalities_score_and_round_trip(dataset, patchcore_models, feature_cache):
    test = list(iter_dataset(dataset, "puck", "test"))
    for modality, path in patchcore_models.items():
        model = load_model(path, cache_dir=feature_cache)  # the test frames' features once per session
        assert model.name == "patchcore" and model.config()["modality"] == modality
        out = model.score(test)
        assert out.image_scores.shape == (len(test),) and np.isfinite(out.image_scores).all()
        assert all(
            m.shape == s.rgb.shape[:2] and m.dtype == np.float32 for m, s in zip(out.pixel_maps, test, strict=True)
        )
        assert np.isfinite(model.threshold)
        again = load_model(model.save(path.with_suffix(".copy.pt")))
        assert np.allclose(again.score(test[:2]).image_scores, out.image_scores[:2], rtol=1e-5)
        assert set(again.banks) == set(model.mods)


def test_fused_patchcore_localises_and_beats_chance(dataset, patchcore_models, feature_cache):
    rep = evaluate_model(load_model(patchcore_models["both"], cache_dir=feature_cache), dataset, "puck", progress=False)
    assert rep["i_auroc"] > 0.6 and rep["p_auroc"] > 0.8


def test_fusion_normalises_each_modality_to_its_good_quantile():
    g = torch.Generator().manual_seed(0)
    maps = {"rgb": torch.rand(4, 8, 8, generator=g) * 100, "xyz": torch.rand(4, 8, 8, generator=g) * 0.01}
    valid = {"rgb": torch.ones(4, 8, 8), "xyz": torch.ones(4, 8, 8)}
    valid["xyz"][:, :2] = 0
    stats = {f"{m}_q": map_quantile(maps[m], valid[m], 0.99) for m in maps}
    fused = fuse(maps, valid, stats, "sum")
    # both modalities now weigh alike: each contributes at most ~1 on good data, nothing where invalid
    assert fused.max() < 2.1
    assert torch.allclose(fused[:, :2], maps["rgb"][:, :2] / stats["rgb_q"])
    with pytest.raises(ValueError, match="fusion"):
        fuse(maps, valid, stats, "nope")


def test_fused_patchcore_scores_a_frame_without_depth_on_colour(dataset, patchcore_models):
    sample = next(iter(iter_dataset(dataset, "puck", "test")))
    sample.xyz = np.zeros_like(sample.xyz)
    out = load_model(patchcore_models["both"]).score([sample])
    assert out.degraded == [True] and out.modalities == [["rgb"]] and np.isfinite(out.image_scores).all()
    out = load_model(patchcore_models["xyz"]).score([sample])
    assert out.degraded == [True] and out.modalities == [[]] and np.isnan(out.image_scores[0])


@pytest.mark.integration
def test_worker_serves_a_patchcore_model(settings, start_worker, patchcore_models):
    results = served_puck_results(settings, start_worker, patchcore_models["both"], "P1", 4)
    assert {r.model for r in results.values()} == {"patchcore"}
    assert all(r.modalities == ["rgb", "xyz"] for r in results.values())
