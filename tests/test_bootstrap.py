"""Paired bootstrap intervals: unit weights give the exact metrics, draws pair across methods, intervals cover."""

from __future__ import annotations

import json

import numpy as np
import pytest

from duoscan.evaluate import difference_table
from duoscan.models.bootstrap import aupro_draws, image_auroc_draws, interval, stratified_weights
from duoscan.models.metrics import aupro, image_auroc


def _case(seed: int = 0, n_good: int = 12, n_bad: int = 18):
    rng = np.random.default_rng(seed)
    masks, maps, labels = [], [], []
    for i in range(n_good + n_bad):
        m = np.zeros((40, 40), bool)
        if i >= n_good:
            y, x = rng.integers(2, 30, 2)
            m[y : y + 6, x : x + int(rng.integers(2, 9))] = True
        masks.append(m)
        maps.append((rng.random((40, 40)) + 1.5 * m * rng.random()).astype(np.float32))
        labels.append(int(i >= n_good))
    scores = [float(a.max() + rng.normal(0, 0.2)) for a in maps]
    return labels, scores, masks, maps


def test_unit_weights_give_the_exact_metrics():
    labels, scores, masks, maps = _case()
    one = np.ones((1, len(labels)))
    assert image_auroc_draws(labels, scores, one)[0] == pytest.approx(image_auroc(labels, scores))
    assert aupro_draws(masks, maps, one, 0.3)[0] == pytest.approx(aupro(masks, maps, 0.3), abs=2e-3)


def test_weights_are_a_multiset_of_the_frames():
    """Each draw resamples good and defective frames to their own counts, so the copies sum per class; a draw
    equals the exact metric of the frames it repeats."""
    labels, scores, masks, maps = _case(1)
    w = stratified_weights(labels, 50, seed=3)
    lab = np.array(labels)
    assert (w[:, lab == 0].sum(1) == (lab == 0).sum()).all() and (w[:, lab == 1].sum(1) == (lab == 1).sum()).all()
    assert np.array_equal(w, stratified_weights(labels, 50, seed=3))  # same labels, same draws: pairing
    idx = np.repeat(np.arange(len(labels)), w[0].astype(int))
    assert image_auroc_draws(labels, scores, w[:1])[0] == pytest.approx(
        image_auroc([labels[i] for i in idx], [scores[i] for i in idx])
    )
    assert aupro_draws(masks, maps, w[:1])[0] == pytest.approx(
        aupro([masks[i] for i in idx], [maps[i] for i in idx], 0.3), abs=2e-3
    )


def test_paired_difference_interval_separates_a_better_method_from_noise():
    labels, scores, masks, maps = _case(2, 40, 60)
    w = stratified_weights(labels, 400)
    lab = np.array(labels)
    better = [s + 0.6 * y for s, y in zip(scores, lab, strict=True)]
    same = [s + 1e-3 * np.sin(i) for i, s in enumerate(scores)]
    base = image_auroc_draws(labels, scores, w)
    lo, hi = interval(image_auroc_draws(labels, better, w) - base)
    assert lo > 0
    lo, hi = interval(image_auroc_draws(labels, same, w) - base)
    assert lo <= 0 <= hi


def test_difference_table_reads_the_paired_draws():
    rows = []
    for spec, shift in (("ref:both", 0.0), ("m:both", 0.05)):
        for cat in ("a", "b"):
            draws = np.linspace(0.7, 0.9, 100) + shift
            rows.append(
                {
                    "spec": spec,
                    "category": cat,
                    "i_auroc": 0.8 + shift,
                    "aupro_30": 0.9,
                    "bootstrap": {"i_auroc": draws.tolist(), "aupro_30": np.full(100, 0.9).tolist()},
                }
            )
    lines = difference_table(rows, ["ref:both", "m:both"], "ref:both")
    row = next(line for line in lines if line.startswith("| m:both"))
    assert "+0.050 | [+0.050, +0.050]" in row and "+0.000 | [+0.000, +0.000]" in row
    assert rows[2]["difference"]["i_auroc"]["interval"] == pytest.approx((0.05, 0.05))


def test_benchmark_table_reports_each_method_against_the_reference(dataset, tmp_path, feature_cache):
    from duoscan.evaluate import benchmark_table

    table = benchmark_table(
        dataset, ["patchcore:both", "baseline"], ["puck"], tmp_path, cache_dir=feature_cache, draws=50
    )
    assert "Difference to patchcore:both" in table and "| baseline | " in table.split("Difference")[1]
    rows = json.loads((tmp_path / "results.json").read_text())
    base = next(r for r in rows if r["spec"] == "baseline")
    lo, hi = base["difference"]["i_auroc"]["interval"]
    assert lo <= base["difference"]["i_auroc"]["point"] <= hi  # the estimate inside its interval (seeded draws)
    assert "bootstrap" not in base  # the draws stay in the per-run reports, not the summary
    assert len(json.loads((tmp_path / "baseline" / "puck.json").read_text())["bootstrap"]["i_auroc"]) == 50
