"""benchmarks/cost.py still runs and its numbers hang together (tiny settings; not a timed test)."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import cost, gpu


def test_cost_benchmark_splits_the_model_from_its_backbone(tmp_path):
    out = tmp_path / "cost.json"
    argv = ["--methods", "mafr,baseline", "--size", "64", "--frames", "4", "--batch", "2", "--repeats", "1"]
    assert cost.main([*argv, "--json", str(out)]) == 0
    mafr, baseline = json.loads(out.read_text())["rows"]
    assert 0 < mafr["backbone_cpu_ms_per_frame"] < mafr["model_cpu_ms_per_frame"]
    assert mafr["model_over_backbone"] == pytest.approx(
        mafr["model_cpu_ms_per_frame"] / mafr["backbone_cpu_ms_per_frame"], rel=0.02
    )
    assert baseline["model_cpu_ms_per_frame"] > 0 and baseline["backbone_cpu_ms_per_frame"] is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the benchmark runs for real")
def test_gpu_benchmark_exits_cleanly_without_a_gpu(tmp_path, capsys):
    assert gpu.main(["--json", str(tmp_path / "gpu.json")]) == 0
    assert "no CUDA device" in capsys.readouterr().out and not (tmp_path / "gpu.json").exists()


def test_cost_benchmark_rows_per_resolution(tmp_path):
    """--resolutions gives one row per model resolution, each model built at it (grid at stride 8)."""
    out = tmp_path / "cost.json"
    argv = ["--methods", "patchcore", "--size", "96", "--resolutions", "64,96", "--frames", "2", "--repeats", "1"]
    assert cost.main([*argv, "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["resolution"], r["config"]["grid"]) for r in rows] == [(64, 8), (96, 12)]
    assert all(r["model_cpu_ms_per_frame"] > 0 for r in rows)
