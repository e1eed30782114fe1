"""Prometheus metrics of workers, producers and the alert forwarder.

Each process serves its own ``/metrics`` on ``DUOSCAN_METRICS_PORT`` (0 = off), so several
workers on one host need one port each; Prometheus scrapes them all and sums.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from .config import Settings

log = logging.getLogger(__name__)

_LATENCY = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)

# workers
FRAMES_CONSUMED = Counter("duoscan_frames_consumed_total", "Frames taken from line topics", ["topic"])
BATCH_SIZE = Histogram("duoscan_batch_size", "Frames per micro-batch", buckets=(1, 2, 4, 8, 16, 32, 64))
SCORING_SECONDS = Histogram("duoscan_scoring_seconds", "Model time per micro-batch", buckets=_LATENCY)
DELIVERY_SECONDS = Histogram(
    "duoscan_delivery_seconds", "Redis write + alert/dead-letter acks per micro-batch", buckets=_LATENCY
)
END_TO_END_SECONDS = Histogram(
    "duoscan_end_to_end_latency_seconds",
    "Frame published -> its result written to Redis (Result.timings.written_ns)",
    ["line"],
    buckets=_LATENCY,
)
RESULTS = Counter("duoscan_results_total", "Results written", ["line", "verdict"])
ALERTS = Counter("duoscan_alerts_total", "Alerts published (at most once per anomalous frame)")
DEAD_LETTERS = Counter("duoscan_dead_letters_total", "Frames sent to the dead-letter topic")
REDELIVERED = Counter("duoscan_redelivered_total", "Frames scored again after a redelivery")
CONSUMER_LAG = Gauge(
    "duoscan_consumer_lag",
    "Messages behind the partition's high watermark after the last delivered batch",
    ["topic", "partition"],
)
MODEL_INFO = Gauge("duoscan_model_loaded", "Model files this worker serves (value 1), by version", ["file", "version"])
# producers
FRAMES_PUBLISHED = Counter("duoscan_frames_published_total", "Frames handed to the broker", ["line"])
BYTES_PUBLISHED = Counter("duoscan_published_bytes_total", "Encoded frame bytes handed to the broker", ["line"])
PUBLISH_ERRORS = Counter("duoscan_publish_errors_total", "Frames the broker did not acknowledge", ["line"])
# alert forwarding
ALERTS_FORWARDED = Counter("duoscan_alerts_forwarded_total", "Alerts delivered to an output", ["output"])
FORWARD_RETRIES = Counter(
    "duoscan_alert_forward_retries_total", "Failed delivery attempts that were retried", ["output"]
)

_served: set[int] = set()


def serve(settings: Settings) -> int | None:
    """Start this process's /metrics endpoint if a port is configured; returns the port."""
    port = settings.metrics_port
    if port <= 0 or port in _served:
        return port or None
    start_http_server(port, addr=settings.metrics_addr)
    _served.add(port)
    log.info("metrics on http://%s:%d/metrics", settings.metrics_addr, port)
    return port
