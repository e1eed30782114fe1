"""The faust app: one stateless agent that turns micro-batches of frames into results.

One agent instance (concurrency 1) per process: faust can commit past an in-flight
message when an agent runs concurrently (faust-streaming issue #606), so we scale
by adding processes to the consumer group. No tables: the embedded broker misreports
end offsets, which breaks table recovery; all state lives in Redis.

Batches flow through a three-stage pipeline (``workers/pipeline.py``) that acks each
batch, and so lets faust commit it, only once its results are durable.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable

import faust
import redis

from duoscan.core import metrics
from duoscan.core.config import Settings, state_dir
from duoscan.core.kafka_clients import frame_topics
from duoscan.core.security import faust_credentials

from .lifecycle import worker_class
from .pipeline import BatchPipeline
from .processor import BatchProcessor

log = logging.getLogger(__name__)


def _limit_fetch_wait(ms: int) -> None:
    """faust hardcodes ``fetch_max_wait_ms=1500`` for its group consumer.

    On Tansu, aiokafka's fetches that find no records are held for up to that wait (frames waited
    up to ~0.75 s each); we lower it for the consumers faust creates in this process.
    """
    import aiokafka

    base = aiokafka.AIOKafkaConsumer
    if getattr(base, "duoscan_fetch_wait", None) == ms:
        return
    root = getattr(base, "duoscan_base", base)

    class Consumer(root):  # type: ignore[misc, valid-type]
        duoscan_fetch_wait = ms
        duoscan_base = root

        def __init__(self, *args: object, **kwargs: object) -> None:
            kwargs["fetch_max_wait_ms"] = ms
            super().__init__(*args, **kwargs)

    aiokafka.AIOKafkaConsumer = Consumer  # faust looks it up on the module at consumer creation


def create_app(
    settings: Settings, topics: list[str], processor: BatchProcessor, on_new_topics: Callable[[list[str]], None]
) -> faust.App:
    """The faust app: one agent scoring micro-batches through the pipeline, and timers that watch for new model
    files and new line topics."""
    app = _faust_app(settings)
    source = app.topic(*topics, value_serializer="raw", key_serializer="raw")
    pipeline = BatchPipeline(processor, on_delivered=lambda events: _record_lag(app, events))

    @app.agent(source, concurrency=1)
    async def score_frames(stream: faust.Stream) -> None:
        try:
            async for events in stream.take_events(settings.max_batch, within=settings.max_wait_s):
                await pipeline.take(events)
        finally:
            await pipeline.drain()

    _on_assignment(app, pipeline, processor)
    if settings.model_poll_s > 0:
        _watch_models(app, settings.model_poll_s, pipeline, processor)
    _watch_new_lines(app, settings, topics, on_new_topics)
    return app


def _faust_app(settings: Settings) -> faust.App:
    _limit_fetch_wait(settings.fetch_max_wait_ms)
    (state_dir() / "faust").mkdir(parents=True, exist_ok=True)
    return faust.App(
        settings.group_id,
        broker=[f"kafka://{b}" for b in settings.bootstrap_servers.split(",")],
        broker_credentials=faust_credentials(settings),
        store="memory://",
        datadir=str(state_dir() / "faust" / "{conf.name}"),  # not <group>-data/ in the working directory
        web_enabled=False,
        topic_disable_leader=True,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_s,
        broker_commit_interval=0.5,
        consumer_auto_offset_reset="earliest",
        consumer_max_fetch_size=settings.max_frame_bytes * 2,
        producer_max_request_size=settings.max_frame_bytes + 65536,
        stream_buffer_maxsize=max(64, settings.max_batch * 4),
    )


def _on_assignment(app: faust.App, pipeline: BatchPipeline, processor: BatchProcessor) -> None:
    @app.on_partitions_assigned.connect
    async def on_assigned(app: faust.App, assigned: set, **kwargs: object) -> None:  # noqa: ARG001
        parts = ",".join(sorted(f"{tp.topic}:{tp.partition}" for tp in assigned))
        log.info("assigned partitions: %s", parts or "(none)")
        try:  # bookkeeping for operators only: a Redis outage must not break the rebalance
            await pipeline.run_on_deliver_thread(
                lambda: processor.store.record_worker(processor.worker_id, partitions=parts)
            )
        except redis.RedisError as exc:
            log.warning("could not record the assignment in Redis: %s", exc)


def _watch_models(app: faust.App, every_s: float, pipeline: BatchPipeline, processor: BatchProcessor) -> None:
    @app.timer(every_s)
    async def watch_models() -> None:
        """Swap in new model files (between batches) and tell operators what this worker runs."""
        loop = asyncio.get_running_loop()
        try:
            changes = await loop.run_in_executor(None, processor.router.refresh)
        except Exception:  # e.g. a file removed mid-scan: keep serving, look again next time
            log.exception("checking for new model versions failed; serving the current ones")
            changes = []
        if changes:
            log.warning("model rollout: %s", "; ".join(changes))
            _record_models(processor)
        try:
            await pipeline.run_on_deliver_thread(processor.record_alive)
        except redis.RedisError as exc:
            log.warning("could not record the worker's models in Redis: %s", exc)


def _watch_new_lines(
    app: faust.App, settings: Settings, topics: list[str], on_new_topics: Callable[[list[str]], None]
) -> None:
    @app.timer(settings.new_topic_poll_s)
    async def watch_new_lines() -> None:
        current = await asyncio.get_running_loop().run_in_executor(None, frame_topics, settings)
        if new := sorted(set(current) - set(topics)):
            log.warning("new line topics %s: restarting to subscribe", ", ".join(new))
            on_new_topics(new)


def _record_lag(app: faust.App, events: list) -> None:
    """Consumer lag per partition from the high watermark of the last fetch (no end_offsets: Tansu misreports them)."""
    last: dict = {}
    for e in events:
        last[e.message.tp] = max(last.get(e.message.tp, -1), e.message.offset)
    for tp, offset in last.items():
        try:
            highwater = app.consumer.highwater(tp)
        except Exception:  # not known yet for this partition
            continue
        if highwater is not None:
            metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, highwater - offset - 1))


def _record_models(processor: BatchProcessor) -> None:
    metrics.MODEL_INFO.clear()
    for name, version in processor.router.table.versions().items():
        metrics.MODEL_INFO.labels(name, version).set(1)


def wait_for_topics(settings: Settings, timeout_s: float = 120.0) -> list[str]:
    """The ``frames.<line>`` topics to subscribe to; waits for the first line to appear.

    faust-streaming cannot subscribe by pattern (its aiokafka driver rejects it), so
    the worker resolves the pattern itself and restarts when a new line shows up.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        topics = frame_topics(settings)
        if topics:
            return topics
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"no {settings.topic_prefix}* topics on {settings.bootstrap_servers} after {timeout_s:.0f} s"
            )
        log.info("waiting for %s* topics", settings.topic_prefix)
        time.sleep(1.0)


def run_worker(settings: Settings, models: list[str], loglevel: str = "info") -> None:
    """Run one worker process until SIGTERM/SIGINT; re-exec itself to pick up new lines."""
    from duoscan.core import kafka_clients
    from duoscan.core.redis_client import check_connection

    from .routing import ModelRouter
    from .store import ResultStore

    # The scoring thread holds the GIL between kernels; the event loop wakes ~20 times a second for
    # fetches and timers. A longer switch interval stops it from taking the GIL mid-batch every 5 ms.
    sys.setswitchinterval(settings.gil_switch_s)
    router = ModelRouter(list(models), settings.device, settings.routes_file or None)
    store = ResultStore(settings)
    check_connection(store.client, settings)
    processor = BatchProcessor(settings, router, store, kafka_clients.producer(settings))
    metrics.serve(settings)
    _record_models(processor)
    topics = wait_for_topics(settings)
    log.info("worker %s subscribing to %s", processor.worker_id, ", ".join(topics))
    resubscribe: list[str] = []

    def on_new_topics(new: list[str]) -> None:
        resubscribe.extend(new)
        os.kill(os.getpid(), signal.SIGTERM)

    app = create_app(settings, topics, processor, on_new_topics)
    worker = worker_class(settings, lambda: processor.delivering > 0)(app, loglevel=loglevel, quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit:
        pass
    finally:
        processor.producer.flush()
    log.info("worker %s stopped: acked batches committed, group left", processor.worker_id)
    if resubscribe:
        os.execv(sys.executable, [sys.executable, "-m", "duoscan", *sys.argv[1:]])
