"""The accuracy-side benchmark scripts run and report what they say (tiny settings; no accuracy is asserted)."""

from __future__ import annotations

import json

from benchmarks import curves, textures
from duoscan.evaluate import train_model


def test_texture_family_benchmark_scores_both_families_and_the_dataset(dataset, tmp_path, feature_cache):
    out = tmp_path / "textures.json"
    argv = ["--data", str(dataset), "--categories", "puck", "--fills", "procedural,photo", "--epochs", "1"]
    argv += ["--cache", feature_cache]
    assert textures.main([*argv, "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r["trained_on"] for r in rows] == ["procedural", "photo"]
    for r in rows:
        for key in ("procedural_i_auroc", "photo_i_auroc", "dataset_i_auroc", "photo_aupro_30"):
            assert 0.0 <= r[key] <= 1.0


def test_pasted_anomalies_stay_on_the_part(dataset):
    good = [s for s in textures.iter_dataset(dataset, "puck", "test") if s.label == 0][:2]
    both = textures.pasted(good, "photo")
    assert len(both) == 4 and [s.label for s in both] == [0, 0, 1, 1]
    for s, g in zip(both[2:], good, strict=True):
        changed = (s.rgb != g.rgb).any(2)
        assert s.mask.any() and not (changed & ~s.mask).any()


def test_loss_curves_plot_the_saved_histories(dataset, tmp_path, feature_cache):
    model = train_model(dataset, "puck", "mafr", "both", progress=False, cache_dir=feature_cache, epochs=3, hidden=16)
    path = model.save(tmp_path / "puck.pt")
    png = tmp_path / "curves.png"
    assert curves.main([str(path), "--out", str(png)]) == 0
    rows = json.loads(png.with_suffix(".json").read_text())
    assert png.stat().st_size > 1000 and rows[0]["method"] == "mafr" and rows[0]["epochs"] == 3
    assert curves.last_fifth_drop([4.0, 2.0, 1.0, 1.0, 1.0, 1.0]) == 0.0
