"""The alert subscriber: what an MES adapter consumes (JSON lines)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from duoscan.core import kafka_clients
from duoscan.core.config import Settings
from duoscan.schemas import Alert, SchemaError

log = logging.getLogger(__name__)


def follow_alerts(
    settings: Settings, group: str = "duoscan-alerts", follow: bool = True, idle_timeout_s: float = 5.0
) -> Iterator[Alert]:
    """Yield alerts; commit the group's offsets after each poll's alerts were handed out.

    At-least-once: an alert is committed only after the caller took it. With
    ``follow=False`` it returns once the group is joined and no alert arrived for
    ``idle_timeout_s``.
    """
    consumer = kafka_clients.consumer(settings, settings.alerts_topic, group_id=group)
    idle_since: float | None = None
    try:
        while True:
            polled = consumer.poll(timeout_ms=500)
            records = [r for batch in polled.values() for r in batch]
            for record in records:
                try:
                    yield Alert.decode(record.value)
                except SchemaError as exc:
                    log.error(
                        "skipping malformed alert at %s[%d]@%d: %s",
                        record.topic,
                        record.partition,
                        record.offset,
                        exc.reason,
                    )
            if records:
                consumer.commit()
                idle_since = time.monotonic()
            elif consumer.assignment():
                idle_since = idle_since or time.monotonic()
                if not follow and time.monotonic() - idle_since > idle_timeout_s:
                    return
    finally:
        consumer.close()
