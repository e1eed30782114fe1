"""One micro-batch, start to finish: decode -> score -> write Redis -> alert -> (caller commits).

Three stages, so the worker can overlap them: ``decode`` (check and unpack the
messages), ``score`` (route, run the model: CPU/GPU bound) and ``deliver`` (write
Redis, publish alerts and dead letters: mostly waiting on the network). ``process``
runs all three. Transport-agnostic and synchronous,
so the faust agent runs the stages in executors (heartbeats keep flowing) and tests
can drive them directly. ``deliver`` does not return before the batch's results are
durable in Redis and its alerts and dead letters are acknowledged by the broker; the
caller acks offsets only after it returns.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

import numpy as np
import redis
from kafka import KafkaProducer

from duoscan.core import metrics
from duoscan.core.config import Settings
from duoscan.models import required_inputs, with_all_inputs
from duoscan.models.components import largest_regions
from duoscan.schemas import Alert, DeadLetter, DecodeLimits, Frame, Region, Result, SchemaError, Timings, peek_frame_id

from .routing import ModelRouter, Route
from .store import ResultStore, encode_heatmap, encode_preview

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Incoming:
    topic: str
    partition: int
    offset: int
    value: bytes
    consumed_ns: int = field(default_factory=time.time_ns)


@dataclass
class DecodedBatch:
    """What ``decode`` hands to ``score``: the messages and, aligned with them, a frame or why it is malformed."""

    messages: list[Incoming]
    frames: list[Frame | SchemaError]


@dataclass
class ScoredBatch:
    """What ``score`` hands to ``deliver``: results with their pixel maps, and the frames to dead-letter."""

    size: int
    results: list[Result] = field(default_factory=list)
    pixel_maps: list[np.ndarray] = field(default_factory=list)  # encoded while delivering, off the scoring thread
    frames: list[Frame] = field(default_factory=list)  # aligned with results: previews are made while delivering
    dead: list[tuple[Incoming, str]] = field(default_factory=list)
    score_s: float = 0.0


@dataclass
class BatchReport:
    results: int = 0
    alerts: int = 0
    dead: int = 0
    duplicates: int = 0
    score_s: float = 0.0


def worker_id(pid: int | None = None) -> str:
    """``<host>-<pid>``: this process's id, or that of worker process ``pid`` on this host."""
    return f"{socket.gethostname()}-{pid or os.getpid()}"


class BatchProcessor:
    def __init__(
        self,
        settings: Settings,
        router: ModelRouter,
        store: ResultStore,
        producer: KafkaProducer,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> None:
        self.settings = settings
        self.router = router
        self.store = store
        self.producer = producer
        self.limits = DecodeLimits(max_frame_bytes=settings.max_frame_bytes)
        self.should_stop = should_stop
        self.worker_id = worker_id()
        self.delivering = 0  # deliver() calls running (one deliver thread: no lock needed)

    def process(self, batch: Sequence[Incoming]) -> BatchReport:
        """Decode, score and deliver one batch; offsets may be committed once this returns."""
        return self.deliver(self.score(self.decode(batch)))

    def decode(self, batch: Sequence[Incoming]) -> DecodedBatch:
        """Each message as a checked frame, or the reason it is malformed. Serial on purpose: the
        worker runs this stage on its own thread while the previous batch scores on every core."""
        return DecodedBatch(list(batch), [self._decode(msg) for msg in batch])

    def score(self, decoded: DecodedBatch) -> ScoredBatch:
        """Route and score decoded frames; touches neither Redis nor Kafka."""
        by_route, dead = self._route(decoded)
        scored = ScoredBatch(len(decoded.messages), dead=dead)
        t0 = time.perf_counter()
        for route, items in by_route.items():
            self._score_route(route, items, scored)
        scored.score_s = time.perf_counter() - t0
        metrics.BATCH_SIZE.observe(len(decoded.messages))
        metrics.SCORING_SECONDS.observe(scored.score_s)
        for msg in decoded.messages:
            metrics.FRAMES_CONSUMED.labels(msg.topic).inc()
        return scored

    def _route(
        self, decoded: DecodedBatch
    ) -> tuple[dict[Route, list[tuple[Incoming, Frame]]], list[tuple[Incoming, str]]]:
        """Frames grouped by the model that scores them (one model call per model + threshold), and the dead
        letters: undecodable frames, frames no model is routed for, frames without an input their model needs."""
        dead: list[tuple[Incoming, str]] = []
        table = self.router.table  # read once: a model rollout takes effect between batches
        by_route: dict[Route, list[tuple[Incoming, Frame]]] = defaultdict(list)
        for msg, frame in zip(decoded.messages, decoded.frames, strict=True):
            if isinstance(frame, SchemaError):
                dead.append((msg, frame.reason))
                continue
            route = table.resolve(frame.line, frame.station, frame.category)
            if route is None:
                where = f"line {frame.line!r}, station {frame.station!r}"
                dead.append((msg, f"no model for category {frame.category!r} on {where}"))
            elif missing := [m for m in required_inputs(route.model) if m not in frame.modalities]:
                model = f"{route.model.name} ({getattr(route.model, 'modality', 'both')})"
                needs = f"which model {model} for {frame.category!r} needs"
                dead.append((msg, f"frame carries no {' or '.join(missing)}, {needs}"))
            else:
                by_route[route].append((msg, frame))
        return by_route, dead

    def _score_route(self, route: Route, items: list[tuple[Incoming, Frame]], into: ScoredBatch) -> None:
        """One model call for ``items``; each frame becomes a result (with its map) or a dead letter in ``into``."""
        model, threshold = route.model, route.threshold
        frames = with_all_inputs([f for _, f in items])  # an absent input as its empty stand-in (degraded path)
        try:
            out = model.score(frames)
        except Exception as exc:  # a frame the model cannot handle must not stall the line
            log.exception("scoring %d frames with %s failed", len(frames), route.path.name)
            into.dead += [(m, f"scoring failed: {type(exc).__name__}: {exc}") for m, _ in items]
            return
        scored_ns = time.time_ns()
        flagged = [float(score) > threshold for score in out.image_scores]  # NaN is never above
        regions = iter(largest_regions([m for m, f in zip(out.pixel_maps, flagged, strict=True) if f], threshold))
        for (msg, frame), score, pixel_map, mods, worse, anomalous in zip(
            items, out.image_scores, out.pixel_maps, out.modalities, out.degraded, flagged, strict=True
        ):
            if not np.isfinite(score):  # e.g. a 3D-only model and a frame without usable depth
                why = "no usable input (e.g. a 3D-only model and no depth)"
                into.dead.append((msg, f"model {model.name} could not score the frame: {why}"))
                continue
            region = next(regions) if anomalous else None
            into.results.append(
                Result(
                    frame_id=frame.frame_id,
                    line=frame.line,
                    station=frame.station,
                    category=frame.category,
                    model=model.name,
                    model_version=route.version,
                    score=float(score),
                    threshold=threshold,
                    verdict="anomalous" if anomalous else "ok",
                    heatmap_key=self.store.heatmap_key(frame.frame_id),
                    modalities=list(mods),
                    region=Region(*region) if region else None,
                    timings=Timings(frame.captured_ns, frame.published_ns, msg.consumed_ns, scored_ns, 0),
                    degraded=bool(worse),
                )
            )
            into.pixel_maps.append(pixel_map)
            into.frames.append(frame)

    def deliver(self, scored: ScoredBatch) -> BatchReport:
        """Make a scored batch durable: results and heatmaps in Redis, alerts and dead letters acked."""
        self.delivering += 1  # a stop on a broker outage waits for this (workers/lifecycle.py)
        try:
            return self._deliver(scored)
        finally:
            self.delivering -= 1

    def _deliver(self, scored: ScoredBatch) -> BatchReport:
        report = BatchReport(score_s=scored.score_s)
        t0 = time.perf_counter()
        results: list[Result] = []
        if scored.results:
            # on this thread, not the scoring thread or the shared frame pool: the next batch scores meanwhile
            heatmaps = [encode_heatmap(m) for m in scored.pixel_maps]
            previews = [self._preview(f) for f in scored.frames] if self.settings.preview_px > 0 else None
            written_ns = time.time_ns()
            results = [_with_written(r, written_ns) for r in scored.results]
            fresh = self._retry("write results to Redis", lambda: self.store.write(results, heatmaps, previews))
            report.results = len(results)
            report.duplicates = fresh.count(False)
            if report.duplicates:  # redelivered frames: their results were overwritten, not added
                self._retry("count redeliveries", lambda: self.store.count("redelivered", report.duplicates))
            report.alerts = self._alert([r for r in results if r.anomalous])
        if scored.dead:
            self._dead_letters(scored.dead)
            report.dead = len(scored.dead)
        self._retry("count processed frames", lambda: self.store.count_processed(self.worker_id, scored.size))
        _observe(report, results, time.perf_counter() - t0)
        return report

    def record_alive(self) -> None:
        """Heartbeat plus the model versions this worker serves, in its Redis worker record."""
        self.store.record_worker(self.worker_id, seen=str(time.time()), models=json.dumps(self.router.table.versions()))

    def _preview(self, frame: Frame) -> bytes:
        return encode_preview(frame.rgb, frame.xyz, self.settings.preview_px)

    def _decode(self, msg: Incoming) -> Frame | SchemaError:
        try:
            return Frame.decode(msg.value, self.limits)
        except SchemaError as exc:
            return exc

    def _alert(self, anomalous: list[Result]) -> int:
        """Publish one alert per anomalous frame, at most once across redeliveries and crashes."""
        sends = [(r.frame_id, r.frame_id.encode(), Alert.from_result(r).encode()) for r in anomalous]
        return self._publish_claimed("alerted", self.settings.alerts_topic, sends)

    def _dead_letters(self, dead: list[tuple[Incoming, str]]) -> None:
        sends = []
        for msg, reason in dead:
            log.warning("dead letter %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, reason)
            letter = DeadLetter(
                reason=reason,
                source_topic=msg.topic,
                source_partition=msg.partition,
                source_offset=msg.offset,
                frame_id=peek_frame_id(msg.value) or "",
                payload=msg.value,
            )
            sends.append((f"{msg.topic}:{msg.partition}:{msg.offset}", None, letter.encode()))
        self._publish_claimed("dead", self.settings.dlq_topic, sends, resend_orphans=True)

    def _publish_claimed(
        self, kind: str, topic: str, sends: list[tuple[str, bytes | None, bytes]], resend_orphans: bool = False
    ) -> int:
        """Claim each id in Redis, publish what we won, wait for the acks, confirm.

        A redelivered batch finds the claims and publishes nothing twice. If a publish fails we
        release our claims and raise, so the batch is not acked and the redelivery publishes.
        A claim left ``pending`` by a worker that died between claiming and confirming is the one
        case where it is unknown whether the message went out: alerts are then not re-sent (an MES
        must not see an alert twice; the frame is listed for reconciliation), dead letters
        (``resend_orphans``) are, since a malformed frame must never be lost and a duplicate carries
        the same source topic, partition and offset.
        """
        if not sends:
            return 0
        ids = [i for i, _, _ in sends]
        won = self._retry(f"claim {kind} marks", lambda: self.store.claim(kind, ids, self.worker_id))
        taken = [i for i, w in zip(ids, won, strict=True) if not w]
        resend: set[str] = set()
        if taken:
            marks = self._retry(f"read {kind} marks", lambda: self.store.marks(kind, taken))
            orphaned = [i for i, m in zip(taken, marks, strict=True) if m and m.startswith("pending:")]
            if orphaned and resend_orphans:
                log.warning(
                    "%d %s message(s) were claimed by a worker that stopped before confirming them; re-sending (at "
                    "least once): %s",
                    len(orphaned),
                    kind,
                    ", ".join(orphaned),
                )
                resend = set(orphaned)
            elif orphaned:
                log.warning(
                    "%d %s message(s) were claimed by a worker that stopped before confirming them; not re-sent "
                    "(at most once), listed in unconfirmed:%s: %s",
                    len(orphaned),
                    kind,
                    kind,
                    ", ".join(orphaned),
                )
                self._retry(f"list unconfirmed {kind}", lambda: self.store.note_unconfirmed(kind, orphaned))
        todo = [s for s, w in zip(sends, won, strict=True) if w or s[0] in resend]
        try:
            futures = [self.producer.send(topic, key=key, value=value) for _, key, value in todo]
            for fut in futures:
                fut.get(timeout=30)
        except Exception:
            self._retry(f"release {kind} claims", lambda: self.store.release(kind, [i for i, _, _ in todo]))
            raise
        if todo:
            self._retry(f"confirm {kind} marks", lambda: self.store.confirm(kind, [i for i, _, _ in todo]))
        if resend:  # counted once the broker has them: a failed publish is re-sent, and counted, by the redelivery
            self._retry(f"count re-sent {kind}", lambda: self.store.count(f"{kind}_resent", len(resend)))
        return len(todo)

    def _retry(self, what: str, fn: Callable[[], T]) -> T:
        """Retry Redis work with capped exponential backoff until it succeeds or we are stopped."""
        delay = 0.2
        while True:
            try:
                return fn()
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
                if self.should_stop():
                    raise
                log.error(
                    "Redis unavailable while trying to %s (%s); retrying in %.1f s, not committing", what, exc, delay
                )
                time.sleep(delay)
                delay = min(delay * 2, self.settings.redis_retry_max_s)


def _observe(report: BatchReport, written: list[Result], delivery_s: float) -> None:
    """Prometheus counters for a delivered batch (after it is durable, so they count what really happened)."""
    metrics.DELIVERY_SECONDS.observe(delivery_s)
    for r in written:
        metrics.RESULTS.labels(r.line, r.verdict).inc()
        metrics.END_TO_END_SECONDS.labels(r.line).observe(max(0, r.timings.written_ns - r.timings.published_ns) / 1e9)
    metrics.ALERTS.inc(report.alerts)
    metrics.DEAD_LETTERS.inc(report.dead)
    metrics.REDELIVERED.inc(report.duplicates)


def _with_written(r: Result, written_ns: int) -> Result:
    """Stamp the moment the Redis write was issued (the batch's results become visible together)."""
    return replace(r, timings=replace(r.timings, written_ns=written_ns))
