"""The alert subscriber: what an MES adapter consumes (JSON lines)."""

from __future__ import annotations

import logging
from typing import Iterator

from duoscan import kafka_clients
from duoscan.config import Settings
from schemas import Alert, SchemaError

log = logging.getLogger(__name__)


def follow_alerts(settings: Settings, group: str | None = "duoscan-alerts", follow: bool = True, idle_timeout_s: float = 5.0) -> Iterator[Alert]:
    """Yield alerts from the alerts topic; commit after each one is handed out (at-least-once).

    With ``follow=False`` it stops after ``idle_timeout_s`` without new alerts.
    """
    consumer = kafka_clients.consumer(settings, settings.alerts_topic, group_id=group, consumer_timeout_ms=-1 if follow else int(idle_timeout_s * 1000))
    try:
        for record in consumer:
            try:
                yield Alert.decode(record.value)
            except SchemaError as exc:
                log.error("skipping malformed alert at %s[%d]@%d: %s", record.topic, record.partition, record.offset, exc.reason)
            if group:
                consumer.commit()
    finally:
        consumer.close()
