"""The sensor SDK: what a camera integration calls to publish a frame.

    with FramePublisher(Settings.load()) as pub:
        pub.publish(rgb, xyz, line="L1", station="S3", category="ring")

Frames are keyed ``line/station`` so one station's frames stay in order on one
partition of ``frames.<line>``. A frame that does not fit the configured limit
is refused here with :class:`FrameTooLargeError`, never dropped silently, and
:meth:`FramePublisher.flush` raises if any frame could not be delivered.

While the broker is unreachable, sent frames wait in the client's buffer and are retried
for ``producer_delivery_timeout_s``; after that their delivery fails and ``flush`` raises
:class:`PublishError` naming them. Set the timeout to how long the line may buffer.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np
from kafka.errors import KafkaConnectionError, KafkaTimeoutError
from kafka.producer.future import FutureRecordMetadata

from duoscan.core import kafka_clients, metrics
from duoscan.core.config import Settings
from duoscan.schemas import DecodeLimits, Frame

log = logging.getLogger(__name__)


class FrameTooLargeError(ValueError):
    """The encoded frame exceeds ``max_frame_bytes`` (and the topic's ``max.message.bytes``)."""


class PublishError(RuntimeError):
    """One or more frames were not acknowledged by the broker."""


class BrokerUnavailableError(PublishError):
    """No broker answered within ``producer_max_block_s``."""


class FramePublisher:
    def __init__(self, settings: Settings, create_topics: bool = True, **producer_config: Any) -> None:
        self.settings = settings
        self.create_topics = create_topics
        try:
            self._producer = kafka_clients.producer(settings, **producer_config)
        except (KafkaTimeoutError, KafkaConnectionError) as exc:
            raise BrokerUnavailableError(
                f"no Kafka broker answered at {settings.bootstrap_servers} within "
                f"{settings.producer_max_block_s:.0f} s "
                f"(DUOSCAN_BOOTSTRAP_SERVERS, DUOSCAN_PRODUCER_MAX_BLOCK_S): {exc}"
            ) from None
        self._limits = DecodeLimits(max_frame_bytes=settings.max_frame_bytes)  # the workers' decode budget
        self._known_lines: set[str] = set()
        self._failures: list[tuple[str, BaseException]] = []
        self._lock = threading.Lock()
        self.sent = 0

    def publish(
        self,
        rgb: np.ndarray | None,
        xyz: np.ndarray | None,
        *,
        line: str,
        station: str,
        category: str,
        frame_id: str | None = None,
        captured_ns: int | None = None,
        meta: dict[str, str] | None = None,
    ) -> Frame:
        """Encode and send one frame; returns it (with its frame id) once handed to the client.

        A colour-only station passes ``xyz=None``, a 3D-only one ``rgb=None``; anything else that is not
        an array raises :class:`schemas.SchemaError` naming the field."""
        frame = Frame(line=line, station=station, category=category, rgb=rgb, xyz=xyz, meta=dict(meta or {}))
        if frame_id:
            frame.frame_id = frame_id
        if captured_ns:
            frame.captured_ns = captured_ns
        self.publish_frame(frame)
        return frame

    def publish_frame(self, frame: Frame) -> FutureRecordMetadata:
        frame.published_ns = time.time_ns()
        payload = frame.encode(codec=self.settings.codec, xyz_float16=self.settings.xyz_float16, limits=self._limits)  # type: ignore[arg-type]
        return self.send_raw(frame.line, frame.key, payload, frame.frame_id)

    def send_raw(self, line: str, key: bytes, payload: bytes, label: str = "") -> FutureRecordMetadata:
        """Send already-encoded bytes (also used by tests to inject malformed frames)."""
        limit = self.settings.max_frame_bytes
        if len(payload) > limit:
            raise FrameTooLargeError(
                f"frame {label} is {len(payload):,} bytes encoded, over the {limit:,}-byte limit "
                f"(DUOSCAN_MAX_FRAME_BYTES); use codec zstd/lz4, DUOSCAN_XYZ_FLOAT16=1, or raise the limit "
                f"on the topic (max.message.bytes) and clients together"
            )
        if self.create_topics and line not in self._known_lines:
            kafka_clients.ensure_topics(self.settings, [line])
            self._known_lines.add(line)
        try:
            future = self._producer.send(self.settings.frames_topic(line), key=key, value=payload)
        except KafkaTimeoutError as exc:  # no metadata for the topic within max_block: broker unreachable
            raise BrokerUnavailableError(
                f"frame {label} not sent: the broker at {self.settings.bootstrap_servers} did not answer within "
                f"{self.settings.producer_max_block_s:.0f} s (DUOSCAN_PRODUCER_MAX_BLOCK_S): {exc}"
            ) from None
        future.add_callback(
            lambda _md: (
                metrics.FRAMES_PUBLISHED.labels(line).inc(),
                metrics.BYTES_PUBLISHED.labels(line).inc(len(payload)),
            )
        )
        future.add_errback(self._failed, label or key.decode(), line)
        self.sent += 1
        return future

    def _failed(self, label: str, line: str, exc: BaseException) -> None:
        log.error("frame %s was not delivered: %s", label, exc)
        metrics.PUBLISH_ERRORS.labels(line).inc()
        with self._lock:
            self._failures.append((label, exc))

    def flush(self, timeout: float | None = 60.0) -> None:
        """Wait for every send; raise :class:`PublishError` naming what was lost."""
        self._producer.flush(timeout)
        with self._lock:
            failures, self._failures = self._failures, []
        if failures:
            label, exc = failures[0]
            raise PublishError(f"{len(failures)} frame(s) not delivered, first {label}: {exc}")

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._producer.close()

    def __enter__(self) -> FramePublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
