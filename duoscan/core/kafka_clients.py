"""kafka-python clients and topic bootstrap configured from :class:`Settings`.

Frames are large (an 800×800 frame is ~9.6 MB raw), so the topics' ``max.message.bytes``
and every client limit derive from ``Settings.max_frame_bytes``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from .config import Settings
from .security import kafka_kwargs

log = logging.getLogger(__name__)

# Room for the record batch header and key around one frame.
_OVERHEAD = 64 * 1024


def partition_for(key: bytes, partitions: int) -> int:
    """The partition the producer's default partitioner gives a keyed record: murmur2, as Kafka's Java
    client, so producers in other languages with default settings agree."""
    from kafka.partitioner.default import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % partitions


def producer(settings: Settings, **extra: Any) -> KafkaProducer:
    return KafkaProducer(**{**producer_config(settings), **extra})


def producer_config(settings: Settings) -> dict[str, Any]:
    return dict(
        bootstrap_servers=settings.bootstrap_servers,
        acks="all",
        linger_ms=5,
        max_request_size=settings.max_frame_bytes + _OVERHEAD,
        batch_size=min(settings.max_frame_bytes + _OVERHEAD, 16 * 1024 * 1024),
        request_timeout_ms=min(30_000, int(settings.producer_delivery_timeout_s * 500)),
        bootstrap_timeout_ms=int(settings.producer_max_block_s * 1000),
        # While the broker is unreachable frames wait in the client's buffer and are retried;
        # after the delivery timeout their futures fail, and FramePublisher.flush raises.
        delivery_timeout_ms=int(settings.producer_delivery_timeout_s * 1000),
        max_block_ms=int(settings.producer_max_block_s * 1000),
        **kafka_kwargs(settings),
    )


def consumer(settings: Settings, *topics: str, **extra: Any) -> KafkaConsumer:
    return KafkaConsumer(*topics, **{**consumer_config(settings), **extra})


def consumer_config(settings: Settings) -> dict[str, Any]:
    return dict(
        bootstrap_servers=settings.bootstrap_servers,
        session_timeout_ms=int(settings.session_timeout_s * 1000),
        heartbeat_interval_ms=int(settings.heartbeat_s * 1000),
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        max_partition_fetch_bytes=settings.max_frame_bytes + _OVERHEAD,
        fetch_max_bytes=2 * (settings.max_frame_bytes + _OVERHEAD),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **kafka_kwargs(settings),
    )


def admin(settings: Settings, timeout_s: float = 20.0) -> KafkaAdminClient:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return KafkaAdminClient(
                bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=10_000, **kafka_kwargs(settings)
            )
        except KafkaError:  # NoBrokersAvailable (2.x) / KafkaConnectionError (3.x)
            if time.monotonic() > deadline:
                raise RuntimeError(f"no Kafka broker reachable at {settings.bootstrap_servers}") from None
            time.sleep(0.2)


def topic_configs(settings: Settings, frames: bool = True) -> dict[str, str]:
    """Per-topic settings: big enough for a frame; frame topics also keep frames for the replay window."""
    configs = {"max.message.bytes": str(settings.max_frame_bytes + _OVERHEAD)}
    if frames:
        configs["retention.ms"] = str(settings.frames_retention_ms)
    return configs


def ensure_topics(settings: Settings, lines: Iterable[str] = ()) -> list[str]:
    """Create the frame topics of ``lines`` plus the DLQ and alerts topics if missing."""
    wanted = {settings.frames_topic(line): settings.partitions for line in lines}
    wanted[settings.dlq_topic] = 1
    wanted[settings.alerts_topic] = 1
    client = admin(settings)
    try:
        existing = set(client.list_topics())
        new = [
            NewTopic(
                name,
                n,
                settings.replication_factor,
                topic_configs=topic_configs(settings, settings.is_frames_topic(name)),
            )
            for name, n in wanted.items()
            if name not in existing
        ]
        if new:
            try:
                client.create_topics(new)
            except TopicAlreadyExistsError:
                pass
            log.info("created topics %s", ", ".join(t.name for t in new))
        return sorted(wanted)
    finally:
        client.close()


def frame_topics(settings: Settings) -> list[str]:
    """Every existing ``frames.<line>`` topic (the DLQ excluded)."""
    client = admin(settings)
    try:
        return sorted(t for t in client.list_topics() if settings.is_frames_topic(t))
    except KafkaError as exc:
        raise RuntimeError(f"cannot list topics on {settings.bootstrap_servers}: {exc}") from exc
    finally:
        client.close()


def read_topic(settings: Settings, topic: str, timeout_s: float = 3.0) -> list[bytes]:
    """Every message value on ``topic``, read from the start with assign() (no group).

    Stops after ``timeout_s`` without new messages; Tansu misreports end offsets, so
    "caught up" cannot be computed from ``end_offsets``.
    """
    c = consumer(settings, consumer_timeout_ms=int(timeout_s * 1000))
    try:
        parts = c.partitions_for_topic(topic) or set()
        c.assign([TopicPartition(topic, p) for p in parts])
        c.seek_to_beginning()
        return [m.value for m in c]
    finally:
        c.close()
