"""The worker's three-stage batch pipeline: batch N+2 decodes while batch N+1 scores and batch N is written
to Redis and its alerts are published, each stage on its own thread.

Each message carries an extra reference until its batch is delivered, so faust (which commits acked offsets
in the background) only commits an offset once its result is in Redis and its alerts are acknowledged.
faust commits the first run of consecutive acked offsets, so batches are acked strictly in the order taken.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from duoscan.models.parallel import named_pool

from .processor import BatchProcessor, Incoming

log = logging.getLogger(__name__)


class BatchPipeline:
    def __init__(
        self, processor: BatchProcessor, on_delivered: Callable[[list[Any]], None] = lambda events: None
    ) -> None:
        self.processor = processor
        self.on_delivered = on_delivered
        self.decode_pool, self.score_pool, self.deliver_pool = (named_pool(n) for n in ("decode", "score", "deliver"))
        self.in_flight: list[asyncio.Task] = []  # batches taken and not yet delivered, oldest first
        self.last: asyncio.Task | None = None  # the batch taken most recently
        self.stopping = False
        processor.should_stop = lambda: self.stopping

    async def take(self, events: list[Any]) -> None:
        """Start one batch of faust events; returns once the pipeline may take another (back-pressure)."""
        for event in events:  # take_events acks when the agent's body returns: hold the commit back until delivered
            event.message.incref()
        batch = [Incoming(e.message.topic, e.message.partition, e.message.offset, e.value) for e in events]
        self.last = asyncio.ensure_future(self._finish(events, self._start(batch), self.last))  # chained even if done
        self.in_flight = [t for t in self.in_flight if not t.done()] + [self.last]
        if len(self.in_flight) >= 2:
            # one batch queued behind the one scoring keeps the model busy; take more once the older is delivered
            # (this wait is cancellable, the batch is not)
            await asyncio.wait([self.in_flight[0]])

    async def drain(self) -> None:
        """On stop: deliver what was taken before faust makes its last commit."""
        pending = [t for t in self.in_flight if not t.done()]
        if pending:
            self.stopping = True
            log.warning("stopping: delivering the %d in-flight batch(es) before committing", len(pending))
            await asyncio.wait(pending)

    async def run_on_deliver_thread(self, fn: Callable[[], Any]) -> Any:
        """Redis bookkeeping on the deliver thread, in order with the batches' writes."""
        return await asyncio.get_running_loop().run_in_executor(self.deliver_pool, fn)

    def _start(self, batch: list[Incoming]) -> Future:
        """Queue the batch's decode and score: each stage is one thread fed in the order batches are taken."""
        decoded = self.decode_pool.submit(self.processor.decode, batch)
        return self.score_pool.submit(lambda: self.processor.score(decoded.result()))

    async def _finish(self, events: list[Any], scoring: Future, before: asyncio.Task | None) -> bool:
        """Deliver the batch after the one taken before it, then ack it (faust may commit it). False: not delivered."""
        try:
            scored = await asyncio.shield(asyncio.wrap_future(scoring))  # cancelling this task never cancels scoring
        except Exception:
            log.critical("scoring a batch of %d frames failed; exiting without commit", len(events), exc_info=True)
            os._exit(70)
        if before is not None:
            await asyncio.wait([before])  # one batch in delivery at a time, in the order taken: acks in offset order
            if before.cancelled() or not before.result():
                return False  # an earlier batch was not delivered: acking this one would let faust commit past it
        try:
            report = await asyncio.get_running_loop().run_in_executor(self.deliver_pool, self.processor.deliver, scored)
        except Exception:  # results may not be durable: die without committing so the group redelivers
            log.critical("delivering a batch of %d frames failed; exiting without commit", len(events), exc_info=True)
            os._exit(70)
        for event in events:
            event.ack()  # drops the reference taken in take(): now faust may commit it
        self.on_delivered(events)
        log.info(
            "batch %d: %d results, %d alerts, %d dead, score %.0f ms",
            *(len(events), report.results, report.alerts, report.dead, report.score_s * 1000),
        )
        return True
