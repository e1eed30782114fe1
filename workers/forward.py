"""Alert forwarding for MES: JSON lines to stdout or a file, and HTTP webhooks with retries.

At-least-once: :func:`follow_alerts` commits the group's offsets only after every alert of a
poll went through every output, so a forwarder that stops mid-way re-sends from the last
commit. Webhook receivers get the frame id as ``Idempotency-Key`` to drop such repeats.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TextIO

from duoscan.core import metrics
from duoscan.core.config import Settings
from duoscan.schemas import Alert

from .alerts import follow_alerts

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


class Output(Protocol):
    name: str

    def send(self, alert: Alert) -> None: ...


class JsonLines:
    """One alert JSON per line, to stdout (``-``) or appended to a file (flushed and fsynced per alert)."""

    def __init__(self, target: str = "-") -> None:
        self.name = "stdout" if target == "-" else f"file:{target}"
        self._file: TextIO = sys.stdout if target == "-" else open(Path(target), "a", encoding="utf-8")

    def send(self, alert: Alert) -> None:
        self._file.write(alert.to_json() + "\n")
        self._file.flush()
        if self._file is not sys.stdout:
            os.fsync(self._file.fileno())


@dataclass
class Webhook:
    """POST each alert as JSON; retry connection errors, timeouts and 408/425/429/5xx with capped backoff.

    Other 4xx answers mean the receiver rejects this alert for good: logged with the alert and skipped,
    so one bad alert cannot hold up every later one.
    """

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 10.0
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    should_stop: Callable[[], bool] = lambda: False
    sleep: Callable[[float], None] = time.sleep
    rejected: int = 0

    @property
    def name(self) -> str:
        return "webhook"

    def send(self, alert: Alert) -> None:
        body = alert.to_json().encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": alert.frame_id, **self.headers}
        delay = self.backoff_s
        attempt = 0
        while True:
            attempt += 1
            try:
                request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    response.read()
                return
            except urllib.error.HTTPError as exc:
                if exc.code not in RETRY_STATUS:
                    self.rejected += 1
                    log.error(
                        "webhook %s rejected alert %s with HTTP %d (not retried): %s",
                        self.url,
                        alert.frame_id,
                        exc.code,
                        alert.to_json(),
                    )
                    return
                reason = f"HTTP {exc.code}"
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                reason = str(getattr(exc, "reason", exc))
            if self.should_stop():
                raise RuntimeError(f"stopped while retrying alert {alert.frame_id} to {self.url}")
            metrics.FORWARD_RETRIES.labels(self.name).inc()
            log.warning(
                "webhook %s: alert %s attempt %d failed (%s); retrying in %.1f s",
                self.url,
                alert.frame_id,
                attempt,
                reason,
                delay,
            )
            self.sleep(delay)
            delay = min(delay * 2, self.max_backoff_s)


def parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise ValueError(f"header {text!r} is not 'Name: value'")
    return name.strip(), value.strip()


def forward_alerts(
    settings: Settings, outputs: list[Output], group: str, follow: bool = True, idle_timeout_s: float = 5.0
) -> int:
    """Deliver every alert to every output, in order; returns how many alerts went through."""
    n = 0
    for alert in follow_alerts(settings, group=group, follow=follow, idle_timeout_s=idle_timeout_s):
        for out in outputs:
            out.send(alert)
            metrics.ALERTS_FORWARDED.labels(out.name).inc()
        n += 1
    return n
