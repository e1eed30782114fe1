"""`make demo`: the whole product on one machine, start to finish, then a summary."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import track
from rich.table import Table

from duoscan.models.metrics import image_auroc
from duoscan.producers.replay import paced, synthetic_frames
from duoscan.producers.sdk import FramePublisher
from duoscan.workers.store import ResultStore

from .core import kafka_clients
from .core.config import Settings, state_dir
from .core.overlay import contact_sheet, overlay
from .embedded import EmbeddedBroker, EmbeddedRedis
from .stack import threads_per_worker

console = Console()
LINES = {"L1": "S1", "L2": "S2"}


def _interleave(*iterators):
    while True:
        for it in iterators:
            yield next(it)


def _wait_for_workers(
    store: ResultStore, n: int, total_partitions: int, timeout_s: float = 90.0
) -> dict[str, list[str]]:
    deadline = time.monotonic() + timeout_s
    with console.status(f"waiting for {n} workers to join the group and share {total_partitions} partitions"):
        while time.monotonic() < deadline:
            assigned = {
                w: [p for p in info.get("partitions", "").split(",") if p] for w, info in store.workers().items()
            }
            live = {w: p for w, p in assigned.items() if p}
            if len(live) == n and sum(len(p) for p in live.values()) == total_partitions:
                return live
            time.sleep(0.5)
    raise TimeoutError(f"workers did not join in time; see {state_dir() / 'logs'}/worker-*.log")


def malformed_payloads(good_payload: bytes) -> list[bytes]:
    """The three messages the demo sends on purpose, each of which every worker must dead-letter:
    random bytes, a truncated frame, and a frame of an unknown schema version."""
    import msgpack

    future = msgpack.packb({**msgpack.unpackb(good_payload, raw=False), "v": 99}, use_bin_type=True)
    return [os.urandom(300), good_payload[: len(good_payload) // 2], future]


def run_demo(
    frames: int = 240,
    n_workers: int = 2,
    fps: float = 10.0,
    out: Path = Path("out"),
    size: int = 128,
    method: str = "bridgenet",
) -> dict:
    """Fit models, start the broker, Redis and ``n_workers`` workers, stream ``frames`` parts (and three malformed
    messages), wait for every result, then summarise: a table, ``summary.json`` and heatmap overlays in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    logs = state_dir() / "logs"
    models_dir = out / "models"
    procs: list[subprocess.Popen] = []
    with (
        EmbeddedBroker(log_path=logs / "demo-broker.log") as broker,
        EmbeddedRedis(log_path=logs / "demo-redis.log") as redis_server,
    ):
        settings = Settings.load(bootstrap_servers=broker.bootstrap, redis_url=redis_server.url)
        console.print(f"[bold]embedded broker[/] {broker.bootstrap}   [bold]redis[/] {redis_server.url}")
        try:
            _fit_models(out / "synthetic", models_dir, method, size)
            kafka_clients.ensure_topics(settings, LINES)
            procs = _start_workers(settings, models_dir, n_workers, logs)
            store = ResultStore(settings)
            for w, parts in _wait_for_workers(store, n_workers, settings.partitions * len(LINES)).items():
                console.print(f"worker {w}: {len(parts)} partitions")
            streamed = _stream(settings, frames, fps, size)
            results = _wait_for_results(store, list(streamed.truth))
            alerts = kafka_clients.read_topic(settings, settings.alerts_topic)
            dlq = kafka_clients.read_topic(settings, settings.dlq_topic)
        finally:
            _stop(procs)
        summary = _summary(streamed, list(results.values()), len(alerts), len(dlq), fps, n_workers)
        pngs = _save_overlays(store, streamed, list(results.values()), out / "heatmaps")
        sheet = contact_sheet(pngs[:16], out / "alerts.png")
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    _print_summary(
        summary, f"{len(pngs)} overlays in {out / 'heatmaps'}" + (f", contact sheet {sheet}" if sheet else "")
    )
    return summary


@dataclass
class _Streamed:
    """What was sent: each frame's defect (the ground truth) and its image (for the overlays)."""

    truth: dict[str, str] = field(default_factory=dict)
    rgbs: dict[str, np.ndarray] = field(default_factory=dict)
    started: float = 0.0


def _fit_models(data: Path, models_dir: Path, method: str, size: int) -> None:
    from duoscan.models import create
    from duoscan.producers.dataset import iter_samples, write_synthetic_dataset

    write_synthetic_dataset(data, size=size, n_train=40, n_validation=30, n_test_good=0, n_test_per_defect=0)
    for stale in models_dir.glob("*.pt"):  # a model left by an earlier demo of another method must not be served
        stale.unlink()
    for cat in ("ring", "puck", "hexnut"):
        model = create(method)
        model.category = cat
        model.fit(list(iter_samples(data, cat, "train")))
        model.calibrate(iter_samples(data, cat, "validation"), target_fpr=0.01)
        model.save(models_dir / f"{cat}.pt")
    console.print(f"fitted {method} models for 3 categories -> {models_dir}")


def _worker_env(settings: Settings, n: int) -> dict[str, str]:
    """The workers' environment: this stack's broker and Redis, and the machine's cores shared out among the ``n``
    workers unless ``DUOSCAN_TORCH_THREADS`` says otherwise."""
    return {
        "DUOSCAN_TORCH_THREADS": str(threads_per_worker(n)),
        **os.environ,
        "DUOSCAN_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "DUOSCAN_REDIS_URL": settings.redis_url,
    }


def _start_workers(settings: Settings, models_dir: Path, n: int, logs: Path) -> list[subprocess.Popen]:
    env = _worker_env(settings, n)
    command = [sys.executable, "-m", "duoscan", "work", "--models", str(models_dir), "--loglevel", "warning"]
    procs = []
    for i in range(n):
        with open(logs / f"demo-worker-{i}.log", "wb") as log:  # the child keeps its own descriptor
            procs.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))
    return procs


def _stream(settings: Settings, frames: int, fps: float, size: int) -> _Streamed:
    """Publish ``frames`` parts from both lines at ``fps``, then the three malformed messages."""
    sources = [
        synthetic_frames(line, station, seed=i + 1, size=size) for i, (line, station) in enumerate(LINES.items())
    ]
    # Render first: a camera does not spend the CPU the workers need on drawing parts.
    parts = list(track(itertools.islice(_interleave(*sources), frames), total=frames, description="rendering parts"))
    sent = _Streamed(started=time.time())
    with FramePublisher(settings) as pub:
        description = f"streaming {frames} frames from {len(LINES)} lines"
        for frame in track(paced(iter(parts), fps, frames), total=frames, description=description):
            pub.publish_frame(frame)
            sent.truth[frame.frame_id] = frame.meta["defect"]
            sent.rgbs[frame.frame_id] = frame.rgb
        for bad in malformed_payloads(parts[-1].encode()):
            pub.send_raw("L1", b"L1/S1", bad, "malformed")
    return sent


def _wait_for_results(store: ResultStore, ids: list[str], timeout_s: float = 120.0) -> dict:
    results: dict = {}
    deadline = time.monotonic() + timeout_s
    with console.status("waiting for results"):
        while len(results) < len(ids) and time.monotonic() < deadline:
            results.update(store.read_results([i for i in ids if i not in results]))
            time.sleep(0.25)
    return results


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()


def _summary(sent: _Streamed, res: list, alerts: int, dlq: int, fps: float, n_workers: int) -> dict:
    truth = sent.truth
    lat = np.array([r.timings.publish_to_write_ms for r in res]) if res else np.array([np.nan])
    span = (max(r.timings.written_ns for r in res) - min(r.timings.published_ns for r in res)) / 1e9 if res else 0.0
    labels = [int(truth[r.frame_id] != "good") for r in res]
    flagged = [r for r in res if r.anomalous]
    tp = sum(truth[r.frame_id] != "good" for r in flagged)
    return {
        "frames_in": len(truth),
        "results_written": len(res),
        "missing": len(truth) - len(res),
        "defective_in": sum(v != "good" for v in truth.values()),
        "alerts": alerts,
        "anomalous_results": len(flagged),
        "true_alerts": tp,
        "false_alerts": len(flagged) - tp,
        "dlq": dlq,
        "throughput_fps": len(res) / span if span else float("nan"),
        "publish_rate_fps": fps,
        "latency_p50_ms": float(np.percentile(lat, 50)),
        "latency_p99_ms": float(np.percentile(lat, 99)),
        "image_auroc": image_auroc(labels, [r.score / r.threshold for r in res]) if res else float("nan"),
        "workers": n_workers,
        "elapsed_s": time.time() - sent.started,
    }


def _save_overlays(store: ResultStore, sent: _Streamed, res: list, heat_dir: Path) -> list[Path]:
    """One heatmap overlay per alerted frame, named by line, station, frame and its true defect."""
    heat_dir.mkdir(parents=True, exist_ok=True)
    pngs = []
    for r in (r for r in res if r.anomalous):
        hm = store.read_heatmap(r.heatmap_key)
        if hm is not None:
            path = heat_dir / f"{r.line}_{r.station}_{r.frame_id[:8]}_{sent.truth[r.frame_id]}.png"
            overlay(sent.rgbs[r.frame_id], hm, r.threshold, r.region.bbox if r.region else None).save(path)
            pngs.append(path)
    return pngs


def _print_summary(summary: dict, heatmaps: str) -> None:
    s = summary
    table = Table(title="duoscan demo", show_header=False)
    rows = [
        ("frames in / results written", f"{s['frames_in']} / {s['results_written']} (missing {s['missing']})"),
        ("defective parts streamed", str(s["defective_in"])),
        ("alerts on topic", f"{s['alerts']} ({s['true_alerts']} true, {s['false_alerts']} false)"),
        ("dead letters (3 sent on purpose)", str(s["dlq"])),
        (
            "throughput",
            f"{s['throughput_fps']:.1f} frames/s (publishing at {s['publish_rate_fps']:.0f}/s, {s['workers']} workers)",
        ),
        ("publish→result latency p50 / p99", f"{s['latency_p50_ms']:.0f} ms / {s['latency_p99_ms']:.0f} ms"),
        ("image AUROC vs ground truth", f"{s['image_auroc']:.3f}"),
        ("heatmaps", heatmaps),
    ]
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)
