"""BTF, the evaluation harness and its CLI, and a worker serving a BTF model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from PIL import Image
from typer.testing import CliRunner

from duoscan.cli import app
from duoscan.evaluate import evaluate_model, train_model
from duoscan.models import load_model
from duoscan.producers.dataset import iter_dataset

from .conftest import cli, served_puck_results


@pytest.fixture(scope="module")
def btf_models(dataset, tmp_path_factory, feature_cache):
    out = tmp_path_factory.mktemp("btf")
    paths = {}
    for modality in ("rgb", "xyz", "both"):
        model = train_model(dataset, "puck", "btf", modality, progress=False, cache_dir=feature_cache)
        paths[modality] = model.save(out / f"puck-{modality}.pt")
    return paths


def test_btf_modalities_score_and_round_trip(dataset, btf_models, feature_cache):
    test = list(iter_dataset(dataset, "puck", "test"))
    for modality, path in btf_models.items():
        model = load_model(path, cache_dir=feature_cache)  # the test frames' FPFH once per session
        assert model.category == "puck" and model.config()["modality"] == modality
        out = model.score(test)
        assert out.image_scores.shape == (len(test),) and np.isfinite(out.image_scores).all()
        assert all(m.shape == s.rgb.shape[:2] for m, s in zip(out.pixel_maps, test, strict=True))
        assert out.modalities[0] == {"rgb": ["rgb"], "xyz": ["xyz"], "both": ["rgb", "xyz"]}[modality]
        assert np.isfinite(model.threshold)
        again = load_model(model.save(path.with_suffix(".copy.pt")))
        assert np.allclose(again.score(test[:2]).image_scores, out.image_scores[:2], rtol=1e-5)


def test_btf_finds_what_it_should(dataset, btf_models, feature_cache):
    """Colour-only stains are invisible to FPFH; contamination (colour + geometry) is seen by both."""
    rep = {
        m: evaluate_model(load_model(p, cache_dir=feature_cache), dataset, "puck", progress=False)
        for m, p in btf_models.items()
    }
    assert rep["rgb"]["per_defect_i_auroc"]["contamination"] >= 0.75
    assert rep["both"]["per_defect_i_auroc"]["contamination"] >= 0.75
    assert rep["both"]["aupro_30"] > 0.5
    for r in rep.values():
        assert 0 <= r["aupro_01"] <= r["aupro_30"] + 1e-9 <= 1.0 + 1e-9


def test_evaluate_cli_writes_report_maps_and_panel(dataset, btf_models, tmp_path):
    out = tmp_path / "eval.json"
    args = [
        "evaluate",
        "--data",
        str(dataset),
        "--category",
        "puck",
        "--model",
        str(btf_models["both"]),
        "--json",
        str(out),
        "--maps",
        str(tmp_path / "maps"),
        "--device",
        "cpu",
        "--cache",
        str(tmp_path / "cache"),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    cached = sorted(tmp_path.joinpath("cache").rglob("*.npz"))
    assert len(cached) == 2 * len(list(iter_dataset(dataset, "puck", "test")))  # rgb + fpfh per test frame
    mtimes = [p.stat().st_mtime_ns for p in cached]
    assert CliRunner().invoke(app, args).exit_code == 0
    assert [
        p.stat().st_mtime_ns for p in sorted(tmp_path.joinpath("cache").rglob("*.npz"))
    ] == mtimes  # served, not recomputed
    report = json.loads(out.read_text())
    for key in ("i_auroc", "p_auroc", "aupro_30", "aupro_01", "n_test", "method", "image_scores", "timing"):
        assert key in report
    assert report["method"] == "btf" and report["n_test"] == len(report["image_scores"])
    assert set(report["timing"]) >= {"features_s", "scoring_s", "fps"}
    sample = next(s for s in iter_dataset(dataset, "puck", "test") if s.defect == "crack")
    amap = tifffile.imread(tmp_path / "maps" / "crack" / f"{sample.name}.tiff")
    assert amap.dtype == np.float32 and amap.shape == sample.mask.shape
    assert report["image_scores"][f"crack/{sample.name}"] == pytest.approx(float(amap.max()), rel=0.05)
    panel = Image.open(out.with_suffix(".png"))
    assert panel.width == 640 and panel.height > 160


def test_train_cli_single_file_and_unknown_method(dataset, tmp_path):
    runner = CliRunner()
    r = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(dataset),
            "--category",
            "ring",
            "--method",
            "baseline",
            "--out",
            str(tmp_path / "ring.pt"),
            "--device",
            "cpu",
        ],
    )
    assert r.exit_code == 0, r.output
    assert load_model(tmp_path / "ring.pt").category == "ring"
    r = cli("train", "--data", str(dataset), "--category", "ring", "--method", "nope", "--out", str(tmp_path / "x.pt"))
    assert r.exit_code == 2 and "unknown method 'nope'" in r.stderr and not (tmp_path / "x.pt").exists()


@pytest.mark.integration
def test_worker_serves_a_btf_model(settings, start_worker, btf_models):
    results = served_puck_results(settings, start_worker, btf_models["both"], "B1", 5)
    assert {r.model for r in results.values()} == {"btf"}
    assert all(r.modalities == ["rgb", "xyz"] for r in results.values())
