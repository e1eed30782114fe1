"""The pipeline benchmark still runs end to end and writes what its README section quotes (tiny settings).

Not a timed test: it checks the script's output is complete and self-consistent, so the benchmark
cannot silently rot between the runs that produce the published numbers.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.integration


def test_pipeline_benchmark_smoke(models_dir, dataset, tmp_path):
    out = tmp_path / "pipeline.json"
    env = {**os.environ, "DUOSCAN_MAX_BATCH": "4"}
    done = subprocess.run(
        [
            sys.executable,
            "benchmarks/pipeline.py",
            "--category",
            "ring",
            "--model",
            str(models_dir / "ring.pt"),
            "--data",
            str(dataset),
            "--batches",
            "4",
            "--frames",
            "24",
            "--latency-seconds",
            "2",
            "--rounds",
            "2",
            "--workdir",
            str(tmp_path / "work"),
            "--json",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    d = json.loads(out.read_text())
    assert d["max_batch"] == 4 and d["model_fps"] > 0 and d["pipeline_fps"] > 0
    rounds = d["ratio_rounds"]
    assert len(rounds) == 2 and rounds[1]["model_fps_before"] == rounds[0]["model_fps_after"], (
        "rounds alternate: one model run between streams"
    )
    for r in rounds:
        assert r["model_fps"] == pytest.approx((r["model_fps_before"] + r["model_fps_after"]) / 2, abs=0.01)
        assert r["ratio"] == pytest.approx(r["pipeline_fps"] / r["model_fps"], abs=1e-3)
        assert set(r["steal_pct"]) == {"model_before", "pipeline", "model_after"} and all(
            0 <= v <= 100 for v in r["steal_pct"].values()
        )
        cpu = r["pipeline_cpu_ms_per_frame"]
        assert cpu["workers"] > 0 and cpu["total"] == pytest.approx(
            cpu["workers"] + cpu["broker"] + cpu["redis"] + cpu["benchmark"], abs=0.3
        )
        # the JSON keeps milliseconds to 0.1, so a ratio recomputed from them is off by up to its rounding
        model_ms, total_ms = r["model_cpu_ms_per_frame"], cpu["total"]
        slack = (0.05 / model_ms + 0.05 / total_ms) * model_ms / total_ms + 1e-3
        assert r["cpu_ratio"] == pytest.approx(model_ms / total_ms, abs=slack)
        assert r["backbone_cpu_ms_per_frame"] is None and r["model_over_backbone"] is None  # the baseline has none
        assert r["pipeline_over_model"] == pytest.approx(cpu["total"] / r["model_cpu_ms_per_frame"], rel=0.02)
        threads = r["worker_thread_cpu_ms_per_frame"]  # the worker names its stage threads for the OS
        assert {"decode", "score", "deliver"} <= threads.keys() and threads["score"] > 0
        assert sum(threads.values()) <= cpu["workers"] + 3, (
            "threads are a part of their worker's CPU (clock-tick rounding aside)"
        )
        model_threads = sum(threads.get(t, 0.0) for t in ("frames", "score", "onnx"))
        assert 0 < r["model_cpu_share"] < 1 and r["model_cpu_share"] == pytest.approx(
            model_threads / total_ms, abs=2e-3
        )
    # the same median, kept to 0.1 ms as the JSON keeps it (a median of two rounds may sit half-way)
    assert d["worker_thread_cpu_ms_per_frame"]["score"] == round(
        statistics.median(r["worker_thread_cpu_ms_per_frame"]["score"] for r in rounds), 1
    )
    assert d["cpu_ratio"] == pytest.approx(statistics.median(r["cpu_ratio"] for r in rounds), abs=1e-3)
    assert d["model_cpu_share"] == pytest.approx(statistics.median(r["model_cpu_share"] for r in rounds), abs=1e-3)
    assert d["ratio"] == pytest.approx(statistics.median(r["ratio"] for r in rounds), abs=1e-3)
    assert d["pipeline_fps"] == pytest.approx(statistics.median(r["pipeline_fps"] for r in rounds), abs=0.01)
    (row,) = d["batch_sweep"]
    assert row["max_batch"] == 4 and row["frames"] >= 24 and 0 < row["p50_ms"] <= row["p99_ms"]
    # the JSON keeps the batch's scoring to 0.1 ms and the ratio to 0.01: allow both roundings
    p99, batch = d["p99_ms"], d["batch_scoring_ms"]
    assert d["p99_over_batch_scoring"] == pytest.approx(p99 / batch, abs=0.005 + 0.05 * p99 / batch**2 + 1e-9)
    scaling = d["scaling"]
    assert scaling["one_worker"]["workers"] == 1 and scaling["two_workers"]["workers"] == 2
    for row in (
        scaling["one_worker"],
        scaling["two_workers"],
    ):  # stations spread evenly: each of two workers gets half the frames
        assert (
            sum(row["frames_per_partition"]) == row["frames"]
            and max(row["frames_per_partition"]) - min(row["frames_per_partition"]) <= 1
        )
    for row in (
        scaling["one_worker"],
        scaling["two_workers"],
    ):  # each against the model alone in as many 1-thread processes
        assert len(row["model_fps_runs"]) == 2 and row["model_fps"] == pytest.approx(
            sum(row["model_fps_runs"]) / 2, abs=0.01
        )
        assert row["ratio"] == pytest.approx(row["fps"] / row["model_fps"], abs=1e-3)
        assert all(0 <= v <= 100 for v in [row["steal_pct"], *row["model_steal_pct"]])
    assert scaling["model_speedup"] == pytest.approx(
        scaling["two_workers"]["model_fps"] / scaling["one_worker"]["model_fps"], abs=0.01
    )
    assert scaling["speedup"] == pytest.approx(scaling["two_workers"]["fps"] / scaling["one_worker"]["fps"], abs=0.01)
    wire = {w["option"]: w for w in d["wire"]}
    assert wire["raw float32"]["vs_raw"] == 1.0
    lossless = [w for w in d["wire"] if w["lossless"]]
    assert all(w["i_auroc_change"] == 0 for w in lossless), "lossless codecs cannot change a score"
    assert min(w["vs_raw"] for w in lossless) < 0.5
    assert out.with_suffix(".png").stat().st_size > 10_000


def test_processes_benchmark_reports_each_configuration(models_dir, tmp_path):
    out = tmp_path / "processes.json"
    done = subprocess.run(
        [
            sys.executable,
            "benchmarks/processes.py",
            "--model",
            str(models_dir / "ring.pt"),
            "--category",
            "ring",
            "--size",
            "64",
            "--configs",
            "1x1,2x1",
            "--frames",
            "8",
            "--batch",
            "4",
            "--repeats",
            "1",
            "--device",
            "cpu",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    d = json.loads(out.read_text())
    one, two = d["configs"]
    assert (one["processes"], one["threads"], two["processes"], two["threads"]) == (1, 1, 2, 1)
    assert len(one["fps_per_process"]) == 1 and len(two["fps_per_process"]) == 2 and min(two["fps_per_process"]) > 0
    assert two["fps"] == pytest.approx(sum(two["fps_per_process"]), abs=0.02), (
        "the configuration's speed is all its processes together"
    )
    assert one["vs_first"] == 1.0 and two["vs_first"] == pytest.approx(two["fps"] / one["fps"], abs=0.01)
    assert one["device"] == "cpu" and one["cpu_ms_per_frame"] > 0
    bad = subprocess.run(
        [sys.executable, "benchmarks/processes.py", "--model", "m.pt", "--configs", "2by4"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "PROCESSESxTHREADS" in bad.stderr
