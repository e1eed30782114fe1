"""Every registered method through the one model interface: fit, score, save, load, and a worker serving it.
A new method registers itself and must add its tiny training settings here, or the first test fails."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from duoscan.evaluate import train_model
from duoscan.models import REGISTRY, load_model
from duoscan.producers.dataset import iter_dataset

from .conftest import process_frames

# Enough to exercise each method's code paths on 64-px fixtures in seconds, not to be accurate.
TINY: dict[str, dict] = {
    "baseline": {},
    "btf": {},
    "patchcore": {},
    "mafr": dict(epochs=2, hidden=16, latent=8),
    "cmdr": dict(epochs=2, map_hidden=16, rec_hidden=16, bottleneck=8),
    "bridgenet": dict(epochs=1, hidden=16, n_synthetic=1, batch_size=8),
}


def test_every_registered_method_is_covered():
    assert set(TINY) == set(REGISTRY)


@pytest.fixture(scope="module", params=sorted(TINY))
def trained(request, dataset, tmp_path_factory):
    name = request.param
    cache = str(tmp_path_factory.mktemp("cache"))
    model = train_model(dataset, "ring", name, "both", progress=False, cache_dir=cache, shots=8, **TINY[name])
    return model, model.save(tmp_path_factory.mktemp(name) / "ring.pt")


def test_fit_score_save_load(trained, dataset):
    model, path = trained
    test = list(iter_dataset(dataset, "ring", "test"))
    out = model.score(test)
    n = len(test)
    assert out.image_scores.shape == (n,) and np.isfinite(out.image_scores).all()
    assert [m.shape for m in out.pixel_maps] == [s.rgb.shape[:2] for s in test]
    assert all(np.isfinite(m).all() for m in out.pixel_maps)
    assert len(out.modalities) == len(out.degraded) == n and all(out.modalities)
    assert np.isfinite(model.threshold)
    again = load_model(path)
    assert (again.name, again.config(), again.category, again.threshold) == (
        model.name,
        model.config(),
        "ring",
        model.threshold,
    )
    assert np.allclose(again.score(test[:3]).image_scores, out.image_scores[:3], rtol=1e-4, atol=1e-6)


@pytest.mark.integration
def test_a_worker_serves_it(trained, settings, dataset):
    model, path = trained
    frames = list(iter_dataset(dataset, "ring", "test"))[:3]
    report, store = process_frames(settings, path, frames, "R" + model.name)
    results = store.read_results([f.frame_id for f in frames])
    assert report.results == 3 and report.dead == 0
    assert {r.model for r in results.values()} == {model.name} and all(np.isfinite(r.score) for r in results.values())


# Each method's ablation switches (the knobs its docs' ablation tables turn), one changed value each, or
# (context, change) for a switch that acts only with another option set. A switch that silently did nothing
# would label an ablation row that measured the default model.
ABLATIONS: dict[str, list[dict | tuple[dict, dict]]] = {
    "mafr": [
        {"combine": "product"},
        {"combine": "sum"},
        {"combine": "max"},
        {"w_census": 0.0},
        {"w_smooth": 0.0},
        {"normalise": True},
        {"denoise": 0.2},
        {"xyz_features": "fpfh"},
    ],
    "cmdr": [{"fusion": "both"}, {"fusion": "map"}, {"fusion": "rec"}, ({"fusion": "both"}, {"alpha": 0.0})],
    "bridgenet": [
        {"gaussian": False},
        {"texture": False},
        {"share": False},
        {"feature_noise": True},
        {"part_only": False},
        {"combine": "max"},
        {"output": "logit"},
    ],
    # FPFH is flat on the 64-px fixtures' smooth parts (the 3D map is zero, so max = sum): fuse geometry maps
    "patchcore": [({"xyz_features": "geometry"}, {"fusion": "max"}), {"xyz_features": "geometry"}],
}


def test_every_switch_has_an_ablation():
    """Every on/off or one-of option of a method is listed above, so a new switch gets tested too."""
    missing = {}
    for name, cls in REGISTRY.items():
        options = getattr(cls, "Options", None)
        if options is None:
            continue
        switches = set(options.CHOICES) - {"modality"}
        switches |= {f.name for f in dataclasses.fields(options) if f.type == "bool"}
        if gap := switches - {k for entry in ABLATIONS.get(name, []) for k in _pair(entry)[1]}:
            missing[name] = sorted(gap)
    assert missing == {}


def _pair(entry: dict | tuple[dict, dict]) -> tuple[dict, dict]:
    return entry if isinstance(entry, tuple) else ({}, entry)


@pytest.fixture(scope="module")
def ablation_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("ablation-cache"))


def _maps(dataset, cache: str, name: str, **change) -> list[np.ndarray]:
    model = train_model(dataset, "ring", name, "both", progress=False, cache_dir=cache, shots=6, **TINY[name], **change)
    return model.score(list(iter_dataset(dataset, "ring", "test"))[:3]).pixel_maps


@pytest.mark.parametrize(
    "name,context,change", [(name, *_pair(e)) for name, entries in ABLATIONS.items() for e in entries], ids=str
)
def test_each_ablation_changes_the_maps(dataset, ablation_cache, name, context, change):
    default = _maps(dataset, ablation_cache, name, **context)
    ablated = _maps(dataset, ablation_cache, name, **context, **change)
    differs = max(float(np.abs(a - d).max() / (np.abs(d).max() + 1e-6)) for a, d in zip(ablated, default, strict=True))
    assert differs > 1e-3, f"{name} with {change} scores the same maps as the default"
