"""How a worker behaves while the broker is away: it logs the outage once, not ~80 client errors a second,
and a stop request ends it within seconds instead of a minute of faust trying to commit and leave the group.

Leaving without a final commit is safe: offsets are only ever committed after results are durable, so the
frames since the last commit are redelivered to whichever worker takes the partitions (results are keyed by
frame id, so a redelivery overwrites instead of duplicating), exactly as after a crash.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable

import faust

from duoscan.core import preflight
from duoscan.core.config import Settings
from duoscan.core.errors import UserError

log = logging.getLogger(__name__)

CLIENT_LOGGERS = ("aiokafka", "kafka", "faust.transport")
REPEAT_WINDOW_S = 30.0
STOP_GRACE_S = 5.0  # how long a stop may wait on an unreachable broker before leaving without the final commit
STOP_LIMIT_S = 60.0  # and in any case


class RepeatFilter(logging.Filter):
    """Let a Kafka client message through once per ``window_s`` (digits ignored, so ports and node ids do
    not make every line new); say how many were held back when it shows again."""

    def __init__(self, window_s: float = REPEAT_WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window_s, self.clock = window_s, clock
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(CLIENT_LOGGERS) or record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, re.sub(r"\d+", "#", record.getMessage())[:160])
        now = self.clock()
        with self._lock:
            last, held = self._seen.get(key, (None, 0))
            if last is not None and now - last < self.window_s:
                self._seen[key] = (last, held + 1)
                return False
            self._seen[key] = (now, 0)
        if held:
            record.msg = f"{record.getMessage()} (and {held} more like it in the last {self.window_s:.0f} s)"
            record.args = ()
        return True


def quiet_client_logs(root: logging.Logger | None = None) -> RepeatFilter:
    """Attach one :class:`RepeatFilter` to every handler of the root logger (records of child loggers reach
    handlers, not the parents' filters)."""
    repeat = RepeatFilter()
    for handler in (root or logging.getLogger()).handlers:
        handler.addFilter(repeat)
    return repeat


def broker_reachable(settings: Settings) -> bool:
    try:
        preflight.broker(settings, timeout_s=1.0)
        return True
    except UserError:
        return False


def leave_when_stuck(
    settings: Settings, delivering: Callable[[], bool], exit_now: Callable[[int], None] = os._exit
) -> threading.Thread:
    """After a stop request: once no batch is being delivered and the broker has been unreachable for
    ``STOP_GRACE_S``, or after ``STOP_LIMIT_S`` in any case, end the process (status 0) without the commit
    faust would otherwise retry for a minute."""

    def watch() -> None:
        started, unreachable_since = time.monotonic(), None
        while True:
            time.sleep(0.5)
            now = time.monotonic()
            if broker_reachable(settings):
                unreachable_since = None
            else:
                unreachable_since = unreachable_since or now
            if unreachable_since and now - unreachable_since >= STOP_GRACE_S and not delivering():
                reason = f"the broker at {settings.bootstrap_servers} is unreachable"
                break
            if now - started >= STOP_LIMIT_S:
                reason = f"the stop took over {STOP_LIMIT_S:.0f} s"
                break
        log.warning(
            "stopping without the final commit: %s; frames since the last commit are redelivered to the group", reason
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        exit_now(0)

    thread = threading.Thread(target=watch, name="stop-watch", daemon=True)
    thread.start()
    return thread


def worker_class(settings: Settings, delivering: Callable[[], bool]) -> type[faust.Worker]:
    """faust's Worker with quiet client logs and a stop that cannot hang on a missing broker."""

    class Worker(faust.Worker):  # type: ignore[misc]
        _watch: threading.Thread | None = None

        def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
            super().on_setup_root_logger(logger, level)
            quiet_client_logs(logger)

        def _schedule_shutdown(self, signal: object) -> None:
            if self._watch is None:
                self._watch = leave_when_stuck(settings, delivering)
                threading.excepthook = _one_line_while_stopping
            super()._schedule_shutdown(signal)

    return Worker


def _one_line_while_stopping(args: threading.ExceptHookArgs) -> None:
    """While stopping, faust's consumer thread dies of the cancellation (and of the broker's absence):
    one line, not a traceback written into the log a character at a time."""
    log.warning("thread %s ended while stopping: %s", args.thread.name if args.thread else "?", args.exc_type.__name__)
