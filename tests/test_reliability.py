"""Crashes, outages and hostile input on the real broker, Redis and worker processes."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time

import pytest
import redis

from duoscan.core import kafka_clients
from duoscan.core.config import Settings
from duoscan.drill import DrillConfig, run_drill
from duoscan.embedded import EmbeddedBroker, EmbeddedRedis, free_port
from duoscan.producers.hostile import HOSTILE_KINDS
from duoscan.producers.replay import synthetic_frames
from duoscan.producers.sdk import BrokerUnavailableError, FramePublisher, PublishError
from duoscan.schemas import Alert, DeadLetter
from duoscan.stack import committed_lag
from duoscan.workers.store import ResultStore

from .conftest import ROOT, wait_for_join, wait_until

pytestmark = pytest.mark.integration


def test_drill_sigkill_redis_outage_and_hostile_input(broker, models_dir, tmp_path):
    """The benchmark's drill, small: one of two workers SIGKILLed mid-stream, Redis stopped and
    restarted while frames arrive, one payload of every hostile kind mixed in."""
    cfg = DrillConfig(frames=60, malformed=len(HOSTILE_KINDS), redis_outage_s=3.0, rate_fps=15.0, timeout_s=180)
    report = run_drill(cfg, tmp_path, models=models_dir, broker=broker, progress=lambda _: None)
    log = "\n".join(report.events)
    assert report.frames_sent == 60 and report.malformed_sent == len(HOSTILE_KINDS)
    assert report.lost == 0 and report.results_in_redis == 60, log
    assert report.duplicate_results == 0 and report.duplicate_alerts == 0
    assert report.dlq_duplicates <= report.dlq_resent, (
        "a dead letter is duplicated only when a dead worker's claim was re-sent"
    )
    assert report.alerts_published == report.anomalous_results > 0 and report.missing_alerts == 0
    assert report.dlq_unique == report.malformed_sent, (report.dlq_reasons, log)
    assert report.worker_crashes_survived == 1 and report.redis_outages_survived == 1
    assert report.redis_retry_log_lines > 0, "the survivor logged that it was waiting for Redis"
    assert report.final_lag == 0
    assert report.goal_met


def _processor(settings: Settings, models_dir, producer=None):
    from duoscan.workers.processor import BatchProcessor
    from duoscan.workers.routing import ModelRouter

    return BatchProcessor(
        settings, ModelRouter(models_dir, "cpu"), ResultStore(settings), producer or kafka_clients.producer(settings)
    )


def _defective_batch(settings: Settings, line: str, n: int):
    from duoscan.workers.processor import Incoming

    kafka_clients.ensure_topics(settings, [line])
    frames = list(itertools.islice(synthetic_frames(line, "S1", seed=7, defect_rate=1.0, size=64), n))
    return [Incoming(settings.frames_topic(line), 0, i, f.encode()) for i, f in enumerate(frames)]


def test_alert_claimed_by_a_dead_worker_is_not_sent_twice(settings, models_dir):
    """A worker killed between claiming an alert and confirming it may or may not have published
    it; the redelivery must not publish again, and the frame is listed for reconciliation."""
    batch = _defective_batch(settings, "K", 6)
    proc = _processor(settings, models_dir)
    first = proc.process(batch)
    assert first.alerts > 0
    flagged = [a.frame_id for a in map(Alert.decode, kafka_clients.read_topic(settings, settings.alerts_topic, 1.0))]
    # simulate the crash window: the claim of one alerted frame is still "pending" from a dead worker
    store = proc.store
    store.client.set(store.mark_key("alerted", flagged[0]), "pending:dead-worker-1")
    again = _processor(settings, models_dir).process(batch)
    assert again.alerts == 0 and again.duplicates == len(batch)
    assert len(kafka_clients.read_topic(settings, settings.alerts_topic, 1.0)) == first.alerts
    assert store.unconfirmed("alerted") == {flagged[0]}


def test_frame_ids_cannot_reach_internal_keys(settings, models_dir):
    """Producers choose frame ids; ids spelled like internal keys must stay per-frame data."""
    from duoscan.workers.processor import Incoming

    ids = ["unconfirmed", "stats", "lines", "anomalies", "worker:x", "unconfirmed:alerted"]
    frames = list(itertools.islice(synthetic_frames("U", "S1", seed=7, defect_rate=1.0, size=64), len(ids)))
    for frame, fid in zip(frames, ids, strict=True):
        frame.frame_id = fid
    proc = _processor(settings, models_dir)
    report = proc.process([Incoming(settings.frames_topic("U"), 0, i, f.encode()) for i, f in enumerate(frames)])
    assert report.dead == 0 and report.alerts > 0
    store = proc.store
    store.note_unconfirmed("alerted", ["late-frame"])  # once WRONGTYPE: duoscan:alerted:unconfirmed was a frame's mark
    store.count("redelivered")
    assert store.unconfirmed("alerted") == {"late-frame"} and store.stats()["redelivered"] == 1
    assert set(store.read_results(ids)) == set(ids)


def test_dead_letter_claimed_by_a_dead_worker_is_sent_again(settings, models_dir):
    """Unlike an alert, a dead letter whose claim a dead worker left pending is re-sent: a malformed
    frame is never lost (a duplicate would carry the same source offset)."""
    from duoscan.workers.processor import Incoming

    kafka_clients.ensure_topics(settings, ["D"])
    topic = settings.frames_topic("D")
    batch = [Incoming(topic, 0, i, b"not a frame %d" % i) for i in range(3)]
    store = ResultStore(settings)
    store.client.set(store.mark_key("dead", f"{topic}:0:1"), "pending:dead-worker-1")
    report = _processor(settings, models_dir).process(batch)
    assert report.dead == 3
    letters = [DeadLetter.decode(v) for v in kafka_clients.read_topic(settings, settings.dlq_topic, 1.0)]
    assert sorted(d.source_offset for d in letters) == [0, 1, 2]
    assert store.stats().get("dead_resent") == 1 and store.unconfirmed("dead") == set()
    assert store.marks("dead", [f"{topic}:0:{i}" for i in range(3)]) == ["sent"] * 3


def test_failed_alert_publish_releases_claims_so_the_redelivery_alerts(settings, models_dir):
    batch = _defective_batch(settings, "P", 4)
    from kafka.errors import KafkaTimeoutError

    with pytest.raises(KafkaTimeoutError):  # the producer cannot reach a broker: the batch fails, nothing acked
        _processor(settings, models_dir, producer=_UnreachableProducer()).process(batch)
    store = ResultStore(settings)
    assert store.client.keys(f"{settings.key_prefix}:alerted:*") == [], "claims were released"
    report = _processor(settings, models_dir).process(batch)
    assert report.alerts > 0
    assert len(kafka_clients.read_topic(settings, settings.alerts_topic, 1.0)) == report.alerts


class _UnreachableProducer:
    """Stands in for a producer whose broker vanished: ``send`` fails as kafka-python's does
    when no metadata arrives within ``max_block_ms`` (a real broker cannot be made to fail
    only the alert publish, after the results were written)."""

    def send(self, *args, **kwargs):
        from kafka.errors import KafkaTimeoutError

        raise KafkaTimeoutError("Failed to update metadata after 1.0 secs.")


def test_sigterm_drains_commits_and_leaves(settings, start_worker):
    kafka_clients.ensure_topics(settings, ["T"])
    worker = start_worker(settings, "drain")
    store = ResultStore(settings)
    wait_for_join(store)
    end: dict = {}
    with FramePublisher(settings) as pub:
        frames = list(itertools.islice(synthetic_frames("T", "S1", seed=3, size=64), 30))
        futures = [pub.publish_frame(f) for f in frames]
        pub.flush()
        for fut in futures:
            md = fut.get(10)
            end[(md.topic, md.partition)] = max(end.get((md.topic, md.partition), 0), md.offset + 1)
    ids = [f.frame_id for f in frames]
    wait_until(lambda: len(store.read_results(ids)) >= 5, 60, "the first results")
    worker.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    assert worker.wait(30) == 0, "a clean exit after SIGTERM"
    assert time.monotonic() - t0 < 20
    # whatever the worker committed has its result: no offset ran ahead of Redis
    done = store.read_results(ids)
    lag = committed_lag(settings, end)
    assert len(ids) - lag <= len(done)
    # a fresh worker finishes the rest; each frame ends with one stream entry
    start_worker(settings, "after")
    wait_until(lambda: len(store.read_results(ids)) == len(ids), 90, "the rest of the results")
    wait_until(lambda: committed_lag(settings, end) == 0, 30, "lag 0")
    assert store.client.xlen(store.stream_key("T")) == len(ids)


def test_redis_outage_worker_retries_and_catches_up(settings, start_worker, tmp_path):
    """Redis stopped for a few seconds while frames arrive: the worker waits (no crash loop,
    no commit) and every frame has its result once Redis is back (AOF keeps the earlier ones)."""
    with EmbeddedRedis(data_dir=tmp_path / "aof", log_path=tmp_path / "redis.log") as server:
        s = settings.replace(redis_url=server.url, redis_retry_max_s=0.5)
        kafka_clients.ensure_topics(s, ["R"])
        worker = start_worker(s, "outage")
        store = ResultStore(s)
        wait_for_join(store)
        frames = list(itertools.islice(synthetic_frames("R", "S1", seed=4, size=64), 20))
        with FramePublisher(s) as pub:
            for f in frames[:10]:
                pub.publish_frame(f)
        ids = [f.frame_id for f in frames]
        wait_until(lambda: len(store.read_results(ids[:10])) == 10, 60, "the first ten results")
        server.stop()
        with FramePublisher(s) as pub:
            for f in frames[10:]:
                pub.publish_frame(f)
        wait_until(
            lambda: worker.log_path.read_text().count("Redis unavailable") > 0, 30, "the worker to log the outage"
        )
        time.sleep(3)
        assert worker.poll() is None, "no crash while Redis is away"
        server.start()
        wait_until(lambda: len(store.read_results(ids)) == len(ids), 60, "every result after Redis returned")
        assert store.client.xlen(store.stream_key("R")) == len(ids)
        assert worker.poll() is None


def test_producer_buffers_while_the_broker_is_unreachable_and_workers_reconnect(tmp_path, redis_server, start_worker):
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as b:
        s = Settings.load(
            bootstrap_servers=b.bootstrap,
            redis_url=redis_server.url,
            key_prefix="bufr",
            group_id="bufr",
            partitions=1,
            producer_delivery_timeout_s=60,
        )
        kafka_clients.ensure_topics(s, ["U"])
        worker = start_worker(s, "reconnect")
        store = ResultStore(s)
        wait_for_join(store)
        frames = list(itertools.islice(synthetic_frames("U", "S1", seed=6, size=64), 8))
        with FramePublisher(s) as pub:
            for f in frames[:4]:
                pub.publish_frame(f)
            pub.flush()
            os.kill(b.pid, signal.SIGSTOP)
            try:
                for f in frames[4:]:
                    pub.publish_frame(f)  # buffered: the broker does not answer
                time.sleep(8)  # longer than the group's session timeout
            finally:
                os.kill(b.pid, signal.SIGCONT)
            pub.flush(60)  # delivered once the broker answers again
        ids = [f.frame_id for f in frames]
        wait_until(lambda: len(store.read_results(ids)) == len(ids), 90, "results after the broker came back")
        assert worker.poll() is None


def test_without_a_broker_a_worker_logs_quietly_and_stops_promptly(tmp_path, redis_server, start_worker):
    """Once: ~80 client ERROR lines a second while the broker was away, and a SIGTERM that took 61 s."""
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as b:
        s = Settings.load(
            bootstrap_servers=b.bootstrap, redis_url=redis_server.url, key_prefix="gone", group_id="gone", partitions=1
        )
        kafka_clients.ensure_topics(s, ["G"])
        worker = start_worker(s, "gone")
        wait_for_join(ResultStore(s))
        before = worker.log_path.read_text().count("\n")
        b.stop()
        time.sleep(12)
        outage = worker.log_path.read_text().splitlines()[before:]
        assert len(outage) < 60, f"{len(outage)} log lines in 12 s of outage"
        started = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
        assert time.monotonic() - started < 15, "a stop does not wait a minute on a missing broker"
        tail = worker.log_path.read_text()
        assert "stopping without the final commit" in tail and "Traceback" not in tail


def test_repeated_client_errors_are_logged_once_per_window():
    import logging

    from duoscan.workers.lifecycle import RepeatFilter

    now = [0.0]
    f = RepeatFilter(window_s=30, clock=lambda: now[0])
    record = lambda msg, name="aiokafka.conn": logging.LogRecord(name, logging.ERROR, "x", 1, msg, (), None)  # noqa: E731
    shown = [f.filter(record(f"Connect call failed ('127.0.0.1', {port})")) for port in range(1000, 1080)]
    assert shown.count(True) == 1, "digits do not make a message new"
    assert (
        f.filter(record("Metadata refresh failed"))
        and f.filter(record("ours", name="workers.app"))
        and f.filter(record("ours", name="workers.app"))
    )
    now[0] = 31.0
    again = record("Connect call failed ('127.0.0.1', 1)")
    assert f.filter(again) and "79 more like it" in again.getMessage()


def test_producer_fails_loudly_instead_of_dropping(tmp_path):
    # no broker at all: a clear error naming the address and the setting
    nowhere = Settings.load(bootstrap_servers=f"127.0.0.1:{free_port()}", producer_max_block_s=1.0)
    with pytest.raises(BrokerUnavailableError, match="DUOSCAN_BOOTSTRAP_SERVERS"):
        FramePublisher(nowhere)
    # a broker that stops answering for longer than the delivery timeout: flush names what was lost
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as b:
        s = Settings.load(
            bootstrap_servers=b.bootstrap, partitions=1, producer_delivery_timeout_s=3.0, producer_max_block_s=2.0
        )
        kafka_clients.ensure_topics(s, ["V"])
        pub = FramePublisher(s)
        frames = list(itertools.islice(synthetic_frames("V", "S1", seed=8, size=32), 3))
        pub.publish_frame(frames[0])
        pub.flush()
        os.kill(b.pid, signal.SIGSTOP)
        try:
            for f in frames[1:]:
                pub.publish_frame(f)
            with pytest.raises(PublishError, match="2 frame\\(s\\) not delivered"):
                pub.flush(20)
        finally:
            os.kill(b.pid, signal.SIGCONT)


def test_worker_refuses_a_redis_password_it_does_not_have(tmp_path, broker, models_dir):
    secret = "s3cret-pw"
    with EmbeddedRedis(password=secret, log_path=tmp_path / "redis.log") as server:
        s = Settings.load(bootstrap_servers=broker.bootstrap, redis_url=server.url, key_prefix="auth", group_id="auth")
        env = {**os.environ, **s.to_env()}
        out = subprocess.run(
            [sys.executable, "-m", "duoscan", "work", "--model", str(models_dir)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 2
        assert "DUOSCAN_REDIS_PASSWORD" in out.stdout + out.stderr
        # with the password the same store works, and the password never shows in the config dump
        store = ResultStore(s.replace(redis_password=secret))
        store.record_worker("w", partitions="x")
        assert store.workers()["w"]["partitions"] == "x"
        with pytest.raises(redis.AuthenticationError):
            ResultStore(s.replace(redis_password="wrong")).client.ping()
        shown = subprocess.run(
            [sys.executable, "-m", "duoscan", "config"],
            cwd=ROOT,
            env={**env, "DUOSCAN_REDIS_PASSWORD": secret},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shown.returncode == 0 and secret not in shown.stdout and "***" in shown.stdout


def test_nothing_in_the_code_unpickles_data():
    """Model files load with weights_only=True, caches with allow_pickle=False, messages are msgpack."""
    import re

    risky = re.compile(
        r"^\s*(import pickle|from pickle|import cloudpickle|import "
        r"dill)|pickle\.loads?\(|allow_pickle\s*=\s*True|weights_only\s*=\s*False",
        re.M,
    )
    found = [
        str(p.relative_to(ROOT))
        for d in ("models", "workers", "schemas", "producers", "duoscan", "benchmarks")
        for p in (ROOT / d).rglob("*.py")
        if risky.search(p.read_text())
    ]
    assert found == []
    loads = [p for p in (ROOT / "models").rglob("*.py") if "torch.load(" in p.read_text()]
    assert loads and all("weights_only=True" in p.read_text() for p in loads)
