"""A running stack for drills and benchmarks: worker processes, small models, waiting, lag."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from kafka import TopicPartition

from .core import kafka_clients
from .core.config import Settings

ROOT = Path(__file__).resolve().parents[1]


def threads_per_worker(workers: int) -> int:
    """Intra-op threads for each of ``workers`` worker processes on this machine: its cores shared out, at least
    one. Workers that each take every core (torch's default) oversubscribe them: two BridgeNet workers of two
    threads on 2 cores held the demo at a p50 latency of 1.9-4.4 s, against 0.09 s with one thread each."""
    return max(1, len(os.sched_getaffinity(0)) // workers)


def spawn_worker(
    settings: Settings, models: list[Path], log_path: Path, extra_env: dict[str, str] | None = None
) -> subprocess.Popen:
    """One ``duoscan work`` process configured entirely through ``DUOSCAN_*`` variables."""
    env = {**os.environ, **settings.to_env(), "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    args = [a for m in models for a in ("--model", str(m))]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "duoscan", "work", *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    proc.log_path = log_path  # type: ignore[attr-defined]
    return proc


def train_baseline_models(out: Path, size: int = 64) -> Path:
    """A small synthetic dataset and one calibrated baseline model per category (seconds on CPU)."""
    from duoscan.producers.dataset import write_synthetic_dataset

    data = write_synthetic_dataset(
        out / "data", size=size, n_train=12, n_validation=8, n_test_good=2, n_test_per_defect=1, progress=False
    )
    return fit_baseline_models(data, out / "models")


def fit_baseline_models(data: Path, models: Path) -> Path:
    """One calibrated baseline model per category of ``data``, saved as ``models/<category>.pt``."""
    from duoscan.models import create
    from duoscan.producers.dataset import categories_in, iter_samples

    models.mkdir(parents=True, exist_ok=True)
    for cat in categories_in(data):
        model = create("baseline").fit(list(iter_samples(data, cat, "train")), progress=False)
        model.calibrate(iter_samples(data, cat, "validation"))
        model.category = cat  # as `duoscan train` records it
        model.save(models / f"{cat}.pt")
    return models


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.2) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def committed_lag(settings: Settings, produced_end: dict[tuple[str, int], int]) -> int:
    """Messages published but not committed by the worker group, from the producer's own acks
    (the embedded broker misreports end offsets, so they are not asked for)."""
    consumer = kafka_clients.consumer(settings, group_id=settings.group_id)
    try:
        lag = 0
        for (topic, part), end in produced_end.items():
            committed = consumer.committed(TopicPartition(topic, part)) or 0
            lag += max(0, end - committed)
        return lag
    finally:
        consumer.close()


def stop_workers(procs: list[subprocess.Popen], timeout_s: float = 30.0) -> None:
    """SIGTERM every live worker (they drain and commit), then SIGKILL what is left after ``timeout_s``."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()


def worker_ids(procs: list[subprocess.Popen]) -> dict[str, subprocess.Popen]:
    """The ids the worker processes report in Redis (``<host>-<pid>``), mapped to the processes."""
    from duoscan.workers.processor import worker_id

    return {worker_id(p.pid): p for p in procs}


def wait_for_assignment(store: Any, ids: Iterable[str], total_partitions: int, timeout_s: float) -> None:
    """Until the workers ``ids`` hold all ``total_partitions`` between them, each holding some
    (as many of them as there are partitions to share)."""
    ids = set(ids)

    def assigned() -> bool:
        held = [
            set(filter(None, info.get("partitions", "").split(","))) for w, info in store.workers().items() if w in ids
        ]
        return (
            len([h for h in held if h]) == min(len(ids), total_partitions) and sum(map(len, held)) == total_partitions
        )

    wait_until(assigned, timeout_s, "every worker to hold partitions")
