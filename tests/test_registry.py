"""Every registered method through the one model interface: fit, score, save, load, and a worker serving it.
A new method registers itself and must add its tiny training settings here, or the first test fails."""

from __future__ import annotations

import numpy as np
import pytest

from duoscan.evaluate import train_model
from duoscan.models import REGISTRY, load_model
from duoscan.producers.dataset import iter_dataset

from .conftest import process_frames

# Enough to exercise each method's code paths on 64-px fixtures in seconds, not to be accurate (112 px instead of
# the default 224: the fixtures are 64 px, so the larger size only costs backbone and FPFH time).
TINY: dict[str, dict] = {
    "baseline": {},
    "btf": dict(resolution=112),
    "patchcore": dict(resolution=112),
    "mafr": dict(resolution=112, epochs=2, hidden=16, latent=8),
    "cmdr": dict(resolution=112, epochs=2, map_hidden=16, rec_hidden=16, bottleneck=8),
    "bridgenet": dict(resolution=112, epochs=1, hidden=16, n_synthetic=1, batch_size=8),
}


def test_every_registered_method_is_covered():
    assert set(TINY) == set(REGISTRY)


@pytest.fixture(scope="module", params=sorted(TINY))
def trained(request, dataset, tmp_path_factory, feature_cache):
    name = request.param
    model = train_model(dataset, "ring", name, "both", progress=False, cache_dir=feature_cache, shots=8, **TINY[name])
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
