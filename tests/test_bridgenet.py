"""BridgeNet: shared network, synthetic-anomaly training, fit/score, missing depth, serving."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from duoscan.evaluate import blank_point_clouds, train_model
from duoscan.models import load_model
from duoscan.models.bridgenet_net import BridgeNetNet, bce_focal, focal_loss
from duoscan.producers.dataset import iter_dataset

TINY = dict(epochs=3, hidden=16, n_synthetic=1, batch_size=8)


def test_shared_network_uses_one_set_of_weights():
    shared = BridgeNetNet({"rgb": 6, "xyz": 6}, hidden=8)
    separate = BridgeNetNet({"rgb": 6, "xyz": 6}, hidden=8, share=False)
    n = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert 2 * n(shared) == n(separate)
    x = torch.randn(2, 6, 5, 5)
    out = shared({"rgb": x, "xyz": x})
    assert out["rgb"].shape == (2, 5, 5) and torch.equal(
        out["rgb"], out["xyz"]
    )  # same input, same weights, same output
    with pytest.raises(ValueError):
        BridgeNetNet({"rgb": 6, "xyz": 4})


def test_concatenated_fusion_is_one_discriminator_over_both_modalities():
    """The authors' fusion: one adaptor and one discriminator over the concatenated features, one logit map;
    a change in either modality alone moves it (a defect one modality sees is not averaged away)."""
    torch.manual_seed(0)
    net = BridgeNetNet({"rgb": 6, "xyz": 4}, hidden=8, concat=True)  # widths may differ: nothing is shared
    assert net.adaptor.in_channels == 10 and not hasattr(net, "adaptors")
    x = {"rgb": torch.randn(2, 6, 5, 5), "xyz": torch.randn(2, 4, 5, 5)}
    out = net(x)
    assert list(out) == ["fused"] and out["fused"].shape == (2, 5, 5)
    for m in ("rgb", "xyz"):
        moved = {**x, m: x[m].clone()}
        moved[m][:, :, 2, 2] += 3.0
        diff = (net(moved)["fused"] - out["fused"]).abs()
        assert (diff[:, 2, 2] > diff.flatten(1).median(1).values).all()  # there most (GroupNorm spans the map)


def test_concat_model_learns_the_union_of_the_masks(bridgenet_model):
    model, _ = bridgenet_model
    assert model.concat and model.opts.combine == "concat"
    rgb, xyz = torch.zeros(1, 3, 3), torch.zeros(1, 3, 3)
    rgb[0, 0, 0], xyz[0, 2, 2] = 1.0, 0.5
    union = model._targets({"rgb": rgb, "xyz": xyz})["fused"]
    assert union[0, 0, 0] == 1.0 and union[0, 2, 2] == 0.5 and union.sum() == 1.5


def test_losses():
    t = torch.zeros(2, 4, 4)
    t[:, 1, 1] = 1
    good = torch.where(t > 0, 8.0, -8.0)
    assert bce_focal(good, t) < 0.01 < bce_focal(-good, t)
    assert focal_loss(good, t) < focal_loss(torch.zeros_like(t), t)


@pytest.fixture(scope="module")
def bridgenet_model(dataset, tmp_path_factory, feature_cache):
    model = train_model(dataset, "puck", "bridgenet", "both", progress=False, cache_dir=feature_cache, **TINY)
    return model, model.save(tmp_path_factory.mktemp("bridgenet") / "puck.pt")


def test_bridgenet_fits_scores_and_round_trips(dataset, bridgenet_model):
    model, path = bridgenet_model
    assert len(model.loss_history) == 3 and model.loss_history[-1] < model.loss_history[0]
    test = list(iter_dataset(dataset, "puck", "test"))
    out = model.score(test)
    assert np.isfinite(out.image_scores).all() and ((out.image_scores >= 0) & (out.image_scores <= 1)).all()
    assert all(m.shape == s.rgb.shape[:2] for m, s in zip(out.pixel_maps, test, strict=True))
    assert out.modalities == [["rgb", "xyz"]] * len(test) and out.degraded == [False] * len(test)
    again = load_model(path)
    assert again.config() == model.config()
    assert np.allclose(again.score(test[:3]).image_scores, out.image_scores[:3], rtol=1e-4, atol=1e-6)


def test_missing_depth_falls_back_to_rgb(dataset, bridgenet_model):
    model, _ = bridgenet_model
    frames, chosen = blank_point_clouds(list(iter_dataset(dataset, "puck", "test"))[:4], 0.5)
    out = model.score(frames)
    for i in range(4):
        assert out.degraded[i] == (i in chosen) and out.modalities[i] == (["rgb"] if i in chosen else ["rgb", "xyz"])
    assert np.isfinite(out.image_scores).all()


def test_averaged_fusion_stays_an_option(dataset, feature_cache):
    model = train_model(
        dataset,
        "puck",
        "bridgenet",
        "both",
        progress=False,
        shots=4,
        cache_dir=feature_cache,
        **{**TINY, "epochs": 1, "combine": "mean"},
    )
    assert not model.concat and set(model.net({m: torch.zeros(1, 152, 2, 2) for m in model.mods})) == {"rgb", "xyz"}
    assert np.isfinite(model.score(list(iter_dataset(dataset, "puck", "test"))[:2]).image_scores).all()


def test_fused_map_is_zero_off_the_part_unless_asked_otherwise(dataset, bridgenet_model):
    model, _ = bridgenet_model
    frame = list(iter_dataset(dataset, "puck", "test"))[0]
    corner = model.score([frame]).pixel_maps[0][:4, :4]  # the part sits in the middle: the corner is conveyor
    assert np.all(corner < 1e-3)
    model.opts = dataclasses.replace(model.opts, part_only=False)
    try:
        assert model.score([frame]).pixel_maps[0][:4, :4].min() > 1e-3  # the paper's whole-frame map
    finally:
        model.opts = dataclasses.replace(model.opts, part_only=True)


@pytest.mark.parametrize("options", [dict(modality="rgb"), dict(modality="xyz")])  # switches: test_registry
def test_single_modality_variants_train_and_score(dataset, options, feature_cache):
    modality = options.pop("modality", "both")
    model = train_model(
        dataset,
        "ring",
        "bridgenet",
        modality,
        progress=False,
        shots=4,
        cache_dir=feature_cache,
        **{**TINY, "epochs": 1, **options},
    )
    test = list(iter_dataset(dataset, "ring", "test"))[:2]
    out = model.score(test)
    assert (
        np.isfinite(out.image_scores).all()
        and out.modalities[0] == {"rgb": ["rgb"], "xyz": ["xyz"], "both": ["rgb", "xyz"]}[modality]
    )
    if modality == "xyz":  # a depth-only model without depth has nothing to score with
        assert np.isnan(model.score(blank_point_clouds(test, 1.0)[0]).image_scores).all()


@pytest.mark.parametrize("refresh,draws", [(1, 3), (2, 2), (0, 1)])
def test_synthetic_anomalies_are_drawn_anew_as_training_goes(dataset, feature_cache, monkeypatch, refresh, draws):
    """refresh=k draws a new set of anomalies every k epochs (the authors draw one per sample); 0 keeps one pool.
    New draws are new anomalies: their masks differ from the first draw's."""
    from duoscan.models.bridgenet import BridgeNet

    pools = []
    original = BridgeNet._synthetic_pool

    def counting(self, *args, **kwargs):
        pools.append(original(self, *args, **kwargs))
        return pools[-1]

    monkeypatch.setattr(BridgeNet, "_synthetic_pool", counting)
    train_model(
        dataset,
        "puck",
        "bridgenet",
        "both",
        progress=False,
        shots=4,
        cache_dir=feature_cache,
        **{**TINY, "refresh": refresh},
    )
    assert len(pools) == draws
    if draws > 1:
        assert not torch.equal(pools[0][1]["rgb"] + pools[0][1]["xyz"], pools[1][1]["rgb"] + pools[1][1]["xyz"])
