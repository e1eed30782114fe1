"""MAFR: network pieces, loss terms, fit/score, few-shot, serving."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from duoscan.evaluate import train_model
from duoscan.models import load_model
from duoscan.models.mafr_net import (
    CBAM,
    AttentionDecoder,
    MAFRNet,
    census_loss,
    edge_aware_smoothness,
    l2_error,
    reconstruction_error,
)
from duoscan.producers.dataset import iter_dataset
from tests.conftest import deepened_cell, standardised_features


def test_cbam_attends_over_space_not_just_channels():
    torch.manual_seed(0)
    cbam = CBAM(16)
    x = torch.randn(1, 16, 9, 9)
    y = x.clone()
    y[:, :, 4, 6] += 5.0  # change one location...
    changed = (cbam(x) - cbam(y)).abs().sum(1)[0]
    assert changed[4, 4] > 0  # ...and a neighbour's output moves: the spatial branch sees the grid
    assert changed[0, 0] > 0  # the channel gate pools over the whole map


def test_decoder_and_net_shapes():
    net = MAFRNet({"rgb": 12, "xyz": 5}, hidden=16, latent=8)
    out = net({"rgb": torch.randn(2, 12, 7, 7), "xyz": torch.randn(2, 5, 7, 7)})
    assert out["rgb"].shape == (2, 12, 7, 7) and out["xyz"].shape == (2, 5, 7, 7)
    assert AttentionDecoder(8, 16, 3)(torch.randn(1, 8, 4, 4)).shape == (1, 3, 4, 4)


def test_loss_terms():
    x = torch.randn(2, 6, 8, 8)
    valid = torch.ones(2, 8, 8)
    assert reconstruction_error(x, x).abs().max() < 1e-5
    assert reconstruction_error(x, 3 * x + 1).abs().max() < 1e-4  # zero-normalised: gain and offset free
    assert reconstruction_error(x, torch.randn_like(x)).mean() > 0.5
    assert census_loss(x, x, valid) == 0
    assert census_loss(x, torch.randn_like(x), valid) > 0.1
    flat = torch.ones(2, 8, 8)
    assert edge_aware_smoothness(flat, x, valid) == 0
    bumpy = torch.zeros(2, 8, 8)
    bumpy[:, ::2] = 1
    assert edge_aware_smoothness(bumpy, x, valid) > 0
    # invalid pixels do not count
    none = torch.zeros(2, 8, 8)
    assert edge_aware_smoothness(bumpy, x, none) == 0 and census_loss(x, torch.randn_like(x), none) == 0


@pytest.fixture(scope="module")
def mafr_model(dataset, tmp_path_factory, feature_cache):
    model = train_model(
        dataset,
        "hexnut",
        "mafr",
        "both",
        progress=False,
        cache_dir=feature_cache,
        epochs=4,
        hidden=32,
        latent=16,
    )
    return model, model.save(tmp_path_factory.mktemp("mafr") / "hexnut.pt")


def test_mafr_fits_scores_and_round_trips(dataset, mafr_model):
    model, path = mafr_model
    assert model.loss_history[-1] < model.loss_history[0]
    test = list(iter_dataset(dataset, "hexnut", "test"))
    out = model.score(test)
    assert out.image_scores.shape == (len(test),) and np.isfinite(out.image_scores).all()
    assert all(m.shape == s.rgb.shape[:2] for m, s in zip(out.pixel_maps, test, strict=True))
    assert out.modalities[0] == ["rgb", "xyz"]
    again = load_model(path)
    assert again.config() == model.config() and again.category == "hexnut"
    assert again.loss_history == pytest.approx(model.loss_history)  # the training curve travels in the file
    assert np.allclose(again.score(test[:3]).image_scores, out.image_scores[:3], rtol=1e-4)


def test_late_fusion_sums_each_modality_over_its_good_quantile_on_the_part(dataset, mafr_model):
    model, _ = mafr_model
    assert model.opts.combine == "late"
    frames = list(iter_dataset(dataset, "hexnut", "test"))[:4]
    prepared, x, valid = standardised_features(model, frames)
    err = model._errors(x, model.net(x))
    gated = model._part_gated(valid, prepared)
    assert 0 < gated["rgb"].mean() < 1  # RGB counts on the part's cells, not on the conveyor
    assert (gated["rgb"] >= valid["xyz"]).all()  # every cell with 3D points is on the part
    expected = err["rgb"] / model.stats["rgb_q"] * gated["rgb"] + err["xyz"] / model.stats["xyz_q"] * valid["xyz"]
    assert torch.allclose(model._grid_map(x, gated), expected)
    # calibration re-fits the scales on held-out good frames: about 1 % of their part cells exceed 1
    model.stats["xyz_q"] = torch.tensor(1e6)
    model.calibrate(iter_dataset(dataset, "hexnut", "validation"))
    val = list(iter_dataset(dataset, "hexnut", "validation"))
    _, x, valid = standardised_features(model, val)
    share = (model._errors(x, model.net(x))["xyz"][valid["xyz"] > 0] > model.stats["xyz_q"]).float().mean()
    assert 0.003 < share < 0.03


def test_image_score_reads_a_wider_smoothing_than_the_map(dataset, mafr_model):
    model, _ = mafr_model
    frames = list(iter_dataset(dataset, "hexnut", "test"))[:4]
    assert model.opts.score_sigma > model.opts.sigma
    wide = model.score(frames)
    model.opts = dataclasses.replace(model.opts, score_sigma=model.opts.sigma)
    try:
        narrow = model.score(frames)
    finally:
        model.opts = dataclasses.replace(model.opts, score_sigma=8.0)
    assert all(
        np.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(wide.pixel_maps, narrow.pixel_maps, strict=True)
    )  # the heatmap is unchanged
    assert (wide.image_scores <= narrow.image_scores + 1e-6).all() and (wide.image_scores < narrow.image_scores).any()


def test_single_modality_and_few_shot(dataset):
    model = train_model(dataset, "ring", "mafr", "rgb", progress=False, shots=3, epochs=2, hidden=16, latent=8)
    assert model.modality == "rgb" and len(model.loss_history) == 2
    out = model.score(list(iter_dataset(dataset, "ring", "test"))[:2])
    assert out.modalities == [["rgb"], ["rgb"]]


def test_3d_error_sees_magnitude_where_the_zero_normalised_one_is_blind(dataset, mafr_model):
    """Three 3D channels: a deeper dent of the same shape (10·x) or a raised one (x + 5) is no error to a
    zero-normalised SSD, but the default L2 error grows with it; and through the fitted model a scaled
    3D feature at one cell scores above the original there."""
    x = torch.randn(2, 3, 6, 6)
    assert reconstruction_error(x, 10 * x).abs().max() < 1e-4 and reconstruction_error(x, x + 5).abs().max() < 1e-4
    assert torch.allclose(l2_error(x, 10 * x), 9 * x.pow(2).mean(1).sqrt(), rtol=1e-4)  # grows with the depth
    assert torch.allclose(l2_error(x, x + 5), torch.full((2, 6, 6), 5.0), rtol=1e-4)
    model, _ = mafr_model
    assert model.opts.xyz_error == "l2" and model.opts.rgb_error == "znssd"  # colour: gain-free (lighting)
    frames = list(iter_dataset(dataset, "hexnut", "train"))[:2]
    feats, scaled, (y, xx) = deepened_cell(model, frames)
    with torch.no_grad():
        before = model._errors(feats, model.net(feats))["xyz"][0, y, xx]
        after = model._errors(scaled, model.net(scaled))["xyz"][0, y, xx]
    assert after > before + 1.0, (float(before), float(after))
