"""The reliability drill: crash a worker, take Redis away, feed hostile frames; count what survived.

Runs the real thing: an embedded broker, a persistent embedded Redis (append-only file, as in
production), ``duoscan work`` processes, and the producer SDK. ``benchmarks/reliability.py``
runs it at full size; the test suite runs it small. Every number in the report is counted
from Redis and the topics afterwards, not from the workers' own bookkeeping.
"""

from __future__ import annotations

import itertools
import logging
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .core import kafka_clients
from .core.config import Settings
from .embedded import EmbeddedBroker, EmbeddedRedis
from .stack import (
    committed_lag,
    spawn_worker,
    stop_workers,
    train_baseline_models,
    wait_for_assignment,
    wait_until,
    worker_ids,
)

log = logging.getLogger(__name__)


@dataclass
class DrillConfig:
    frames: int = 300  # valid frames
    malformed: int = 100  # hostile payloads mixed in
    workers: int = 2
    kill_at: float = 0.3  # SIGKILL one worker once this share of the stream was published...
    redis_down_at: float = 0.55  # ...and stop Redis at this share
    redis_outage_s: float = 10.0
    rate_fps: float = 20.0  # publish rate, so frames keep arriving through the crash and the outage
    lines: int = 2
    stations: int = 3
    size: int = 64
    partitions: int = 4
    timeout_s: float = 300.0
    seed: int = 0


@dataclass
class DrillReport:
    frames_sent: int = 0
    malformed_sent: int = 0
    results_in_redis: int = 0
    lost: int = 0
    duplicate_results: int = 0
    redelivered_results: int = 0  # frames scored twice whose second result overwrote the first
    anomalous_results: int = 0
    alerts_published: int = 0
    duplicate_alerts: int = 0
    missing_alerts: int = 0
    unconfirmed_alerts: int = 0
    dlq_messages: int = 0
    dlq_duplicates: int = 0
    dlq_unique: int = 0  # distinct source offsets in the DLQ: must equal malformed_sent
    dlq_resent: int = 0  # dead letters re-sent because the worker that claimed them died first (at least once)
    dlq_reasons: dict[str, int] = field(default_factory=dict)
    worker_crashes_survived: int = 0
    redis_outages_survived: int = 0
    redis_retry_log_lines: int = 0
    final_lag: int = -1
    seconds_to_all_results: float = 0.0
    wall_s: float = 0.0
    events: list[str] = field(default_factory=list)
    goal_met: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Publisher(threading.Thread):
    """Publishes valid frames and hostile payloads interleaved, at a fixed rate."""

    def __init__(self, settings: Settings, cfg: DrillConfig) -> None:
        super().__init__(daemon=True, name="drill-producer")
        from duoscan.producers.hostile import hostile_payloads
        from duoscan.producers.replay import synthetic_frames

        self.settings, self.cfg = settings, cfg
        lines = [f"L{i + 1}" for i in range(cfg.lines)]
        streams = [
            synthetic_frames(line, f"S{s + 1}", seed=cfg.seed * 100 + i * 10 + s, defect_rate=0.3, size=cfg.size)
            for i, line in enumerate(lines)
            for s in range(cfg.stations)
        ]
        self.frames = [next(streams[i % len(streams)]) for i in range(cfg.frames)]
        self.hostile = hostile_payloads(self.frames[0], cfg.malformed, cfg.seed)
        total = cfg.frames + cfg.malformed
        bad_at = (
            {round((k + 0.5) * total / max(cfg.malformed, 1)) for k in range(cfg.malformed)} if cfg.malformed else set()
        )
        bad_at = set(itertools.islice(sorted(bad_at), cfg.malformed))
        self.plan: list[tuple[str, int]] = []  # ("frame", i) or ("hostile", j)
        fi = hi = 0
        for pos in range(total):
            if (pos in bad_at and hi < cfg.malformed) or fi >= cfg.frames:
                self.plan.append(("hostile", hi))
                hi += 1
            else:
                self.plan.append(("frame", fi))
                fi += 1
        self.sent = 0
        self.end_offsets: dict[tuple[str, int], int] = {}
        self.error: BaseException | None = None
        self.lines = lines

    def run(self) -> None:
        from duoscan.producers.sdk import FramePublisher

        try:
            with FramePublisher(self.settings) as pub:
                start = time.perf_counter()
                futures = []
                for n, (kind, i) in enumerate(self.plan):
                    delay = start + n / self.cfg.rate_fps - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    if kind == "frame":
                        frame = self.frames[i]
                        frame.captured_ns = time.time_ns()
                        futures.append(pub.publish_frame(frame))
                    else:
                        line = self.lines[i % len(self.lines)]
                        futures.append(
                            pub.send_raw(
                                line, f"{line}/S1".encode(), self.hostile[i][1], f"hostile:{self.hostile[i][0]}"
                            )
                        )
                    self.sent = n + 1
                pub.flush()
                for fut in futures:
                    md = fut.get(timeout=60)
                    key = (md.topic, md.partition)
                    self.end_offsets[key] = max(self.end_offsets.get(key, 0), md.offset + 1)
        except BaseException as exc:  # noqa: BLE001 - reported by the drill
            self.error = exc


def run_drill(
    cfg: DrillConfig,
    workdir: Path,
    models: Path | None = None,
    broker: EmbeddedBroker | None = None,
    progress: Callable[[str], None] = print,
) -> DrillReport:
    """Run the whole drill; infrastructure it did not get is started (and stopped) here."""
    workdir.mkdir(parents=True, exist_ok=True)
    drill = _Drill(cfg, progress)
    own_broker = broker is None
    broker = broker or EmbeddedBroker(log_path=workdir / "broker.log").start()
    redis_server = EmbeddedRedis(log_path=workdir / "redis.log", data_dir=workdir / "redis-data").start()
    try:
        if models is None:
            drill.event("training baseline models on a small synthetic dataset")
            models = train_baseline_models(workdir)
        drill.start(_drill_settings(cfg, broker, redis_server), models, workdir)
        victim = drill.kill_a_worker()
        drill.take_redis_away(redis_server)
        drill.settle()
        drill.count(victim)
    finally:
        stop_workers(drill.procs)
        redis_server.stop()
        if own_broker:
            broker.stop()
    drill.report.wall_s = round(time.monotonic() - drill.t_start, 1)
    return drill.report


def _drill_settings(cfg: DrillConfig, broker: EmbeddedBroker, redis_server: EmbeddedRedis) -> Settings:
    """Settings of a fresh set of topics, group and keys, so a drill never reads an earlier one's messages."""
    return Settings.isolated(
        "drill" + uuid.uuid4().hex[:6],
        bootstrap_servers=broker.bootstrap,
        redis_url=redis_server.url,
        partitions=cfg.partitions,
        redis_retry_max_s=1.0,
    )


class _Drill:
    """The drill's steps, in order: start workers and the publisher, kill a worker, take Redis away, let the
    results settle, count. Each step appends what happened to the report's events."""

    def __init__(self, cfg: DrillConfig, progress: Callable[[str], None]) -> None:
        self.cfg, self.progress = cfg, progress
        self.t_start = time.monotonic()
        self.report = DrillReport()
        self.procs: list[subprocess.Popen] = []

    def event(self, msg: str) -> None:
        stamp = f"{time.monotonic() - self.t_start:6.1f} s  {msg}"
        self.report.events.append(stamp)
        self.progress(stamp)

    def start(self, settings: Settings, models: Path, workdir: Path) -> None:
        from duoscan.workers.store import ResultStore

        cfg = self.cfg
        self.settings = settings
        self.publisher = _Publisher(settings, cfg)
        kafka_clients.ensure_topics(settings, self.publisher.lines)
        self.store = ResultStore(settings)
        self.procs = [spawn_worker(settings, [models], workdir / f"worker{i}.log") for i in range(cfg.workers)]
        self.ids = worker_ids(self.procs)
        self.event(f"started {cfg.workers} workers: {', '.join(self.ids)}")
        wait_for_assignment(self.store, self.ids, cfg.partitions * cfg.lines, 120)
        self.event("partitions assigned; publishing")
        self.publisher.start()
        self.total = len(self.publisher.plan)

    def _processed(self, worker: str) -> int:
        return int(self.store.workers()[worker].get("processed", 0))

    def kill_a_worker(self) -> subprocess.Popen:
        """SIGKILL a worker that is scoring, mid-stream: right after it finished a batch, so that batch is written
        but (commits run every 0.5 s) most likely not committed yet: the window where a redelivery could duplicate
        results or alerts."""
        pub, cfg = self.publisher, self.cfg
        wait_until(lambda: pub.sent >= cfg.kill_at * self.total or not pub.is_alive(), cfg.timeout_s, "the kill point")
        scoring = lambda: next((w for w in self.store.workers() if w in self.ids and self._processed(w) > 0), None)  # noqa: E731
        victim_id = str(wait_until(scoring, 60, "a worker to score"))
        seen = self._processed(victim_id)
        wait_until(lambda: self._processed(victim_id) > seen, 60, "the victim's next batch", interval=0.01)
        victim = self.ids[victim_id]
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        self.event(
            f"SIGKILL {victim_id} right after a batch, {self._processed(victim_id)} frames in; "
            f"{pub.sent}/{self.total} published"
        )
        return victim

    def take_redis_away(self, redis_server: EmbeddedRedis) -> None:
        """Redis away while frames keep arriving."""
        pub, cfg = self.publisher, self.cfg
        at = cfg.redis_down_at * self.total
        wait_until(lambda: pub.sent >= at or not pub.is_alive(), cfg.timeout_s, "the outage point")
        redis_server.stop()
        self.event(f"Redis stopped; {pub.sent}/{self.total} published")
        time.sleep(cfg.redis_outage_s)
        redis_server.start()
        self.event(f"Redis restarted after {cfg.redis_outage_s:.0f} s; {pub.sent}/{self.total} published")

    def settle(self) -> None:
        """Publishing ends; wait until every frame has its result and the group's lag is 0."""
        pub, cfg, report = self.publisher, self.cfg, self.report
        pub.join(cfg.timeout_s)
        if pub.error:
            raise RuntimeError(f"the drill's producer failed: {pub.error}") from pub.error
        self.event(f"all {self.total} messages published")
        self.frame_ids = [f.frame_id for f in pub.frames]
        report.frames_sent, report.malformed_sent = len(self.frame_ids), len(pub.hostile)
        t_wait = time.monotonic()
        all_written = lambda: len(self.store.read_results(self.frame_ids)) == len(self.frame_ids)  # noqa: E731
        try:
            wait_until(all_written, cfg.timeout_s, "every frame's result")
        except TimeoutError as exc:
            self.event(str(exc))
        report.seconds_to_all_results = round(time.monotonic() - self.t_start, 1)
        try:
            wait_until(lambda: committed_lag(self.settings, pub.end_offsets) == 0, 60, "the group's lag to reach 0")
        except TimeoutError as exc:
            self.event(str(exc))
        report.final_lag = committed_lag(self.settings, pub.end_offsets)
        self.event(f"results settled after {time.monotonic() - t_wait:.1f} s; lag {report.final_lag}")

    def count(self, victim: subprocess.Popen) -> None:
        """Count everything from Redis and the topics, not from the workers' own bookkeeping."""
        report, store = self.report, self.store
        results = store.read_results(self.frame_ids)
        report.results_in_redis = len(results)
        report.lost = len(self.frame_ids) - len(results)
        entries: Counter[str] = Counter()
        for line in self.publisher.lines:
            for _, fields in store.client.xrange(store.stream_key(line)):
                entries[fields[b"frame_id"].decode()] += 1
        extra = len(set(entries) - set(self.frame_ids))
        report.duplicate_results = sum(n - 1 for n in entries.values() if n > 1) + extra
        report.redelivered_results = store.stats().get("redelivered", 0)
        self._count_alerts({fid for fid, r in results.items() if r.anomalous})
        self._count_dead_letters()
        survivors = [p for p in self.procs if p is not victim]
        report.worker_crashes_survived = int(report.lost == 0 and all(p.poll() is None for p in survivors))
        report.redis_outages_survived = int(report.lost == 0 and all(p.poll() is None for p in survivors))
        report.redis_retry_log_lines = sum(
            Path(p.log_path).read_text(errors="replace").count("Redis unavailable")  # type: ignore[attr-defined]
            for p in survivors
        )
        report.goal_met = (
            report.lost == 0
            and report.duplicate_alerts == 0
            and report.duplicate_results == 0
            and report.dlq_unique == report.malformed_sent
            and report.dlq_duplicates <= report.dlq_resent
            and report.final_lag == 0
        )

    def _count_alerts(self, anomalous: set[str]) -> None:
        from duoscan.schemas import Alert

        report, settings = self.report, self.settings
        report.anomalous_results = len(anomalous)
        alerts = Counter(
            Alert.decode(v).frame_id for v in kafka_clients.read_topic(settings, settings.alerts_topic, 3.0)
        )
        report.alerts_published = sum(alerts.values())
        report.duplicate_alerts = sum(n - 1 for n in alerts.values() if n > 1)
        report.missing_alerts = len(anomalous - set(alerts))
        report.unconfirmed_alerts = len(self.store.unconfirmed("alerted"))

    def _count_dead_letters(self) -> None:
        from duoscan.schemas import DeadLetter

        report, settings = self.report, self.settings
        letters = [DeadLetter.decode(v) for v in kafka_clients.read_topic(settings, settings.dlq_topic, 3.0)]
        report.dlq_messages = len(letters)
        report.dlq_unique = len({(d.source_topic, d.source_partition, d.source_offset) for d in letters})
        report.dlq_duplicates = len(letters) - report.dlq_unique
        report.dlq_resent = self.store.stats().get("dead_resent", 0)
        report.dlq_reasons = dict(Counter(_reason_kind(d.reason) for d in letters).most_common())


def _reason_kind(reason: str) -> str:
    """Group DLQ reasons by their stable prefix (drop the numbers) for the report."""
    head = reason.split("(")[0].strip()
    return "".join(c for c in head if not c.isdigit())[:80]
