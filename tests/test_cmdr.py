"""CMDR-IAD: network pieces, fusion maths, fit/score, missing depth, serving."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from duoscan.evaluate import blank_point_clouds, evaluate_model, train_model
from duoscan.models import load_model
from duoscan.models.cmdr_net import (
    DISTANCES,
    CMDRNet,
    MappingNet,
    ReconstructionNet,
    confidence_weighted,
    cosine_distance,
    reliability_gate,
)
from duoscan.producers.dataset import iter_dataset
from tests.conftest import deepened_cell, process_frames, standardised_features

TINY = dict(epochs=4, map_hidden=16, rec_hidden=16, bottleneck=8)


@pytest.mark.parametrize("grid", [28, 9])
def test_networks_keep_the_grid(grid):
    x = torch.randn(2, 12, grid, grid)
    assert ReconstructionNet(12, 16, 8, levels=2)(x).shape == x.shape
    assert MappingNet(12, 5, 16)(x).shape == (2, 5, grid, grid)
    both = CMDRNet({"rgb": 12, "xyz": 5}, 16, 16, 8)
    rec, mapped = both({"rgb": x, "xyz": torch.randn(2, 5, grid, grid)})
    assert rec["xyz"].shape == mapped["xyz"].shape == (2, 5, grid, grid) and mapped["rgb"].shape == x.shape
    rec, mapped = CMDRNet({"xyz": 5}, 16, 16, 8)({"xyz": torch.randn(1, 5, grid, grid)})
    assert mapped == {} and set(rec) == {"xyz"}


def test_reconstruction_has_no_shortcut_for_a_single_spike():
    # a per-location identity would reproduce a one-cell spike; the bottleneck must not
    torch.manual_seed(0)
    net = ReconstructionNet(4, 16, 4, levels=2)
    x = torch.zeros(1, 4, 28, 28)
    y = x.clone()
    y[0, :, 14, 14] = 10
    assert (net(y) - net(x)).abs()[0, :, 14, 14].max() < 10 * 0.5


def test_reliability_gate_and_confidence_weighting():
    valid = torch.ones(1, 16, 16)
    j = torch.full((1, 16, 16), 0.5)
    j[0, 8, 8] = 3.0  # a discrepancy that stands out from its neighbourhood
    gated = reliability_gate(j, valid)
    assert torch.all(gated <= j + 1e-6) and torch.all(gated >= 0.5 * j - 1e-6)  # σ(·) ∈ [0.5, 1) for J ≥ 0
    assert gated[0, 8, 8] / j[0, 8, 8] > gated[0, 0, 0] / j[0, 0, 0]  # trusted more than flat surroundings
    assert reliability_gate(j, torch.zeros_like(valid)).abs().max() == 0  # nothing without 3D points

    d2, d3 = torch.full((1, 4, 4), 1.0), torch.full((1, 4, 4), 3.0)
    v3 = torch.ones(1, 4, 4)
    v3[0, 0, 0] = 0
    a = confidence_weighted(d2, d3, v3, alpha=0.3)
    assert a[0, 0, 0] == 1.0  # no 3D point: the RGB error alone
    assert 1.0 < a[0, 1, 1] < 2.0  # between both, nearer the more confident (smaller) error
    assert torch.allclose(confidence_weighted(d2, d3, v3, alpha=0.0)[0, 1, 1], torch.tensor(2.0))  # α=0: plain mean


@pytest.fixture(scope="module")
def cmdr_model(dataset, tmp_path_factory, feature_cache):
    model = train_model(dataset, "hexnut", "cmdr", "both", progress=False, cache_dir=feature_cache, **TINY)
    return model, model.save(tmp_path_factory.mktemp("cmdr") / "hexnut.pt")


def test_cmdr_fits_scores_and_round_trips(dataset, cmdr_model):
    model, path = cmdr_model
    assert model.loss_history[-1] < model.loss_history[0]
    test = list(iter_dataset(dataset, "hexnut", "test"))
    out = model.score(test)
    assert (
        out.image_scores.shape == (len(test),) and np.isfinite(out.image_scores).all() and (out.image_scores >= 0).all()
    )
    assert all(m.shape == s.rgb.shape[:2] for m, s in zip(out.pixel_maps, test, strict=True))
    assert out.modalities == [["rgb", "xyz"]] * len(test) and out.degraded == [False] * len(test)
    assert np.isfinite(model.threshold) and float(model.stats["degraded_scale"]) > 0
    again = load_model(path)
    assert again.config() == model.config() and again.threshold == model.threshold
    assert np.allclose(again.score(test[:3]).image_scores, out.image_scores[:3], rtol=1e-4)


def test_late_fusion_sums_the_four_distances_over_their_good_quantiles(dataset, cmdr_model):
    model, _ = cmdr_model
    assert model.opts.fusion == "late"
    frames = list(iter_dataset(dataset, "hexnut", "test"))[:3]
    prepared, x, valid = standardised_features(model, frames)
    gated = model._part_gated(valid, prepared)
    d = model._distances(x)
    expected = sum(
        d[k] / model.stats[f"{k}_q"] * gated[k.split("_", 1)[1]] for k in ("rec_rgb", "rec_xyz", "map_rgb", "map_xyz")
    )
    fused, rgb_only = model._grid_maps(x, gated)
    assert torch.allclose(fused, expected)
    assert torch.allclose(rgb_only, d["rec_rgb"] / model.stats["rec_rgb_q"])  # the degraded path needs no 3D input


def test_missing_depth_is_scored_by_rgb_and_flagged(dataset, cmdr_model):
    model, _ = cmdr_model
    test = list(iter_dataset(dataset, "hexnut", "test"))[:4]
    blanked, chosen = blank_point_clouds(test, 0.5)
    assert 1 <= len(chosen) <= 3 and all(not blanked[i].xyz.any() for i in chosen)
    assert all(blanked[i].xyz.any() for i in set(range(4)) - chosen)
    out = model.score(blanked)
    for i in range(4):
        assert out.degraded[i] == (i in chosen)
        assert out.modalities[i] == (["rgb"] if i in chosen else ["rgb", "xyz"])
    assert np.isfinite(out.image_scores).all() and (out.image_scores[list(chosen)] > 0).all()
    assert all(out.pixel_maps[i].max() > 0 for i in chosen)  # the heatmap still localises from RGB


def test_single_modality_variants(dataset):
    test = list(iter_dataset(dataset, "ring", "test"))[:2]
    blanked, _ = blank_point_clouds(test, 1.0)
    rgb = train_model(dataset, "ring", "cmdr", "rgb", progress=False, shots=4, **TINY)
    assert rgb.score(blanked).modalities == [["rgb"], ["rgb"]] and np.isfinite(rgb.score(blanked).image_scores).all()
    xyz = train_model(dataset, "ring", "cmdr", "xyz", progress=False, shots=4, **TINY)
    assert np.isfinite(xyz.score(test).image_scores).all()
    out = xyz.score(blanked)  # a 3D-only model without depth has nothing to score with
    assert np.isnan(out.image_scores).all() and out.degraded == [True, True] and out.modalities == [[], []]


def test_evaluate_reports_blanked_frames(dataset, cmdr_model):
    model, _ = cmdr_model
    rep = evaluate_model(model, dataset, "hexnut", progress=False, blank_xyz=0.5)
    n_good = rep["n_test"] - rep["n_anomalous"]
    assert rep["n_degraded"] == round(0.5 * n_good) + round(0.5 * rep["n_anomalous"])
    assert 0 <= rep["i_auroc_blanked"] <= 1 and 0 <= rep["i_auroc_intact"] <= 1
    assert evaluate_model(model, dataset, "hexnut", progress=False)["n_degraded"] == 0


def test_worker_flags_degraded_frames_and_dead_letters_unscorable_ones(settings, cmdr_model, dataset, tmp_path):
    from duoscan.core import kafka_clients
    from duoscan.schemas import DeadLetter

    frames, chosen = blank_point_clouds(list(iter_dataset(dataset, "hexnut", "test"))[:4], 0.5)
    report, store = process_frames(settings, cmdr_model[1], frames, "C")
    assert report.results == 4 and report.dead == 0
    results = store.read_results([f.frame_id for f in frames])
    for i, f in enumerate(frames):
        assert results[f.frame_id].degraded == (i in chosen)
        assert results[f.frame_id].modalities == (["rgb"] if i in chosen else ["rgb", "xyz"])

    xyz_only = train_model(dataset, "hexnut", "cmdr", "xyz", progress=False, shots=4, **TINY).save(
        tmp_path / "hexnut.pt"
    )
    report, _ = process_frames(settings, xyz_only, frames, "C", partition=1)
    assert report.results == 2 and report.dead == 2
    letters = [DeadLetter.decode(v) for v in kafka_clients.read_topic(settings, settings.dlq_topic, 1.0)]
    assert sorted(d.frame_id for d in letters) == sorted(frames[i].frame_id for i in chosen)
    assert all("no usable input" in d.reason for d in letters)


def test_3d_distance_sees_magnitude_where_the_cosine_is_blind(dataset, cmdr_model):
    """A cosine distance between 3-channel features ignores a deeper dent of the same shape (10·x); the
    default 3D distance (L2) does not, and a fitted model's 3D reconstruction distance grows at a scaled cell."""
    x = torch.randn(2, 3, 6, 6)
    assert cosine_distance(x, 10 * x).abs().max() < 1e-5
    assert torch.allclose(DISTANCES["l2"](x, 10 * x), 9 * x.pow(2).mean(1).sqrt(), rtol=1e-4)  # grows with depth
    model, _ = cmdr_model
    assert model.opts.xyz_distance == "l2"
    frames = list(iter_dataset(dataset, "hexnut", "train"))[:2]
    feats, scaled, (y, xx) = deepened_cell(model, frames)
    with torch.no_grad():
        before, after = model._distances(feats), model._distances(scaled)
    assert after["rec_xyz"][0, y, xx] > before["rec_xyz"][0, y, xx] + 1.0
    assert after["map_xyz"][0, y, xx] > before["map_xyz"][0, y, xx] + 1.0
