"""End to end on a real broker and Redis: producers -> topics -> workers -> Redis + alerts + DLQ."""

from __future__ import annotations

import itertools

import msgpack
import numpy as np
import pytest

from duoscan.core import kafka_clients
from duoscan.producers.replay import synthetic_frames
from duoscan.producers.sdk import FramePublisher, FrameTooLargeError
from duoscan.schemas import Alert, DeadLetter, Frame, SchemaError, encode_array
from duoscan.workers.store import ResultStore

from .conftest import wait_for_items, wait_until

pytestmark = pytest.mark.integration


def publish_parts(
    pub: FramePublisher, line: str, station: str, n: int, seed: int, defect_rate: float = 0.3
) -> list[Frame]:
    frames = list(itertools.islice(synthetic_frames(line, station, seed=seed, defect_rate=defect_rate, size=64), n))
    for f in frames:
        pub.publish_frame(f)
    pub.flush()
    return frames


def malformed_payloads(valid: bytes) -> dict[str, bytes]:
    obj = msgpack.unpackb(valid, raw=False)
    wrong_version = msgpack.packb({**obj, "v": 42}, use_bin_type=True)
    other = encode_array(np.ones((3, 3, 3), np.float32), "zstd")  # well-formed, but not aligned with rgb
    shapes = msgpack.packb({**obj, "xyz": other}, use_bin_type=True)
    return {
        "random bytes": b"\x93\x00garbage\xff" * 5,
        "truncated": valid[: len(valid) // 3],
        "wrong version": wrong_version,
        "mismatched shapes": shapes,
    }


def test_frames_flow_end_to_end(settings, start_worker):
    kafka_clients.ensure_topics(settings, ["A"])
    worker = start_worker(settings)
    store = ResultStore(settings)
    with FramePublisher(settings) as pub:
        frames = publish_parts(pub, "A", "S1", 24, seed=11)
        bad = malformed_payloads(frames[0].encode())
        for payload in bad.values():
            pub.send_raw("A", b"A/S1", payload, "malformed")
    ids = [f.frame_id for f in frames]

    results = wait_for_items(lambda: store.read_results(ids), len(ids), 90, "all results")
    assert set(results) == set(ids), "every frame has exactly one result"
    for f in frames:
        r = results[f.frame_id]
        assert (r.line, r.station, r.category, r.model) == ("A", "S1", f.category, "baseline")
        assert (
            r.timings.captured_ns
            <= r.timings.published_ns
            <= r.timings.consumed_ns
            <= r.timings.scored_ns
            <= r.timings.written_ns
        )
        assert r.modalities == ["rgb", "xyz"]
        heatmap = store.read_heatmap(r.heatmap_key)
        assert heatmap is not None and heatmap.shape == f.rgb.shape[:2]
        assert heatmap.max() == pytest.approx(r.score, rel=1e-3), (
            "the frame's own map (the baseline scores a frame by its map's maximum), to float16 precision"
        )
        assert r.verdict == ("anomalous" if r.score > r.threshold else "ok")
        if r.anomalous:
            assert r.region is not None and r.region.area_px > 0

    # alerts exactly for the frames over threshold
    anomalous = {fid for fid, r in results.items() if r.anomalous}
    assert anomalous, "the baseline flags at least one of the defective parts"
    alerts = wait_for_items(
        lambda: [Alert.decode(v) for v in kafka_clients.read_topic(settings, settings.alerts_topic, 1.0)],
        len(anomalous),
        30,
        "alerts",
    )
    assert sorted(a.frame_id for a in alerts) == sorted(anomalous)
    for a in alerts:
        assert a.score > a.threshold and a.heatmap_key == results[a.frame_id].heatmap_key and a.region is not None

    # malformed frames land in the DLQ with a reason and their original bytes
    letters = wait_for_items(
        lambda: [DeadLetter.decode(v) for v in kafka_clients.read_topic(settings, settings.dlq_topic, 1.0)],
        len(bad),
        30,
        "dead letters",
    )
    assert sorted(d.payload for d in letters) == sorted(bad.values())
    reasons = " | ".join(d.reason for d in letters)
    assert "schema version 42" in reasons and "aligned" in reasons and "msgpack" in reasons
    assert all(d.source_topic == settings.frames_topic("A") for d in letters)

    # the MES-side subscriber sees each alert once per consumer group (offsets are committed)
    from duoscan.workers.alerts import follow_alerts

    followed = list(follow_alerts(settings, group="mes", follow=False, idle_timeout_s=3))
    assert sorted(a.frame_id for a in followed) == sorted(anomalous)
    assert list(follow_alerts(settings, group="mes", follow=False, idle_timeout_s=3)) == []

    # one stream entry per frame, the worker is still alive
    assert store.client.xlen(store.stream_key("A")) == len(ids)
    assert worker.poll() is None


def test_redelivered_batch_is_idempotent(settings, models_dir):
    """Processing the same messages twice overwrites results and raises no second alert."""
    from duoscan.workers.processor import BatchProcessor, Incoming
    from duoscan.workers.routing import ModelRouter

    kafka_clients.ensure_topics(settings, ["B"])
    frames = list(itertools.islice(synthetic_frames("B", "S1", seed=5, defect_rate=1.0, size=64), 6))
    batch = [Incoming(settings.frames_topic("B"), 0, i, f.encode()) for i, f in enumerate(frames)]
    store = ResultStore(settings)
    proc = BatchProcessor(settings, ModelRouter(models_dir, "cpu"), store, kafka_clients.producer(settings))
    first = proc.process(batch)
    second = proc.process(batch)
    assert first.results == second.results == 6
    assert first.duplicates == 0 and second.duplicates == 6
    assert first.alerts > 0 and second.alerts == 0
    assert store.client.xlen(store.stream_key("B")) == 6
    alerts = kafka_clients.read_topic(settings, settings.alerts_topic, 1.0)
    assert len(alerts) == first.alerts


def test_unknown_category_goes_to_dlq(settings, models_dir):
    from duoscan.workers.processor import BatchProcessor, Incoming
    from duoscan.workers.routing import ModelRouter

    kafka_clients.ensure_topics(settings, ["C"])
    f = next(synthetic_frames("C", "S1", size=64))
    f.category = "widget"
    proc = BatchProcessor(
        settings, ModelRouter(models_dir, "cpu"), ResultStore(settings), kafka_clients.producer(settings)
    )
    report = proc.process([Incoming(settings.frames_topic("C"), 0, 0, f.encode())])
    assert (report.results, report.dead) == (0, 1)
    [letter] = [DeadLetter.decode(v) for v in kafka_clients.read_topic(settings, settings.dlq_topic, 1.0)]
    assert "no model for category 'widget'" in letter.reason and letter.frame_id == f.frame_id


def test_two_workers_share_partitions(settings, start_worker):
    kafka_clients.ensure_topics(settings, ["L1", "L2"])
    start_worker(settings, "w0")
    start_worker(settings, "w1")
    store = ResultStore(settings)
    total = settings.partitions * 2

    def balanced():
        parts = {w: set(filter(None, info.get("partitions", "").split(","))) for w, info in store.workers().items()}
        live = [p for p in parts.values() if p]
        return parts if len(live) == 2 and sum(map(len, live)) == total and not set.intersection(*live) else None

    assignment = wait_until(balanced, 90, "both workers to hold partitions")
    assert all(assignment.values())
    with FramePublisher(settings) as pub:
        frames = publish_parts(pub, "L1", "S1", 12, seed=1, defect_rate=0.0) + publish_parts(
            pub, "L1", "S2", 12, seed=2, defect_rate=0.0
        )
        frames += publish_parts(pub, "L2", "S1", 12, seed=3, defect_rate=0.0) + publish_parts(
            pub, "L2", "S2", 12, seed=4, defect_rate=0.0
        )
    ids = [f.frame_id for f in frames]
    wait_until(lambda: len(store.read_results(ids)) == len(ids), 90, "all results")
    processed = {w: int(info.get("processed", 0)) for w, info in store.workers().items()}
    assert sum(processed.values()) >= len(ids)
    assert all(n > 0 for n in processed.values()), f"both workers scored frames: {processed}"


def test_producer_refuses_oversized_frames(settings):
    small = settings.replace(max_frame_bytes=50_000)
    rng = np.random.default_rng(0)
    noisy = Frame(
        line="big",
        station="S1",
        category="ring",
        rgb=rng.integers(0, 256, (128, 128, 3), dtype=np.uint8),
        xyz=rng.standard_normal((128, 128, 3)).astype(np.float32),
    )
    with FramePublisher(small) as pub:
        with pytest.raises(SchemaError, match="over the 50,000-byte decode budget"):  # what every worker would refuse
            pub.publish_frame(noisy)
        with pytest.raises(FrameTooLargeError, match="over the 50,000-byte limit"):  # the message limit, for raw bytes
            pub.send_raw("big", noisy.key, noisy.encode(codec="none"), noisy.frame_id)
        assert pub.sent == 0
    assert settings.frames_topic("big") not in kafka_clients.frame_topics(settings)


def test_station_frames_stay_in_order_on_one_partition(settings):
    from kafka import TopicPartition

    with FramePublisher(settings) as pub:
        frames = publish_parts(pub, "K", "S7", 10, seed=3, defect_rate=0.0)
    c = kafka_clients.consumer(settings, consumer_timeout_ms=1500)
    c.assign([TopicPartition(settings.frames_topic("K"), p) for p in range(settings.partitions)])
    c.seek_to_beginning()
    seen = [(m.partition, Frame.decode(m.value).frame_id) for m in c]
    c.close()
    assert len({p for p, _ in seen}) == 1
    assert [fid for _, fid in seen] == [f.frame_id for f in frames]


def test_worker_subscribes_to_new_line_topics(settings, start_worker):
    kafka_clients.ensure_topics(settings, ["first"])
    start_worker(settings)
    store = ResultStore(settings)
    wait_until(lambda: any(i.get("partitions") for i in store.workers().values()), 60, "worker to join")
    with FramePublisher(settings) as pub:  # a new line appears after the worker started
        frames = publish_parts(pub, "later", "S1", 3, seed=9, defect_rate=0.0)
    ids = [f.frame_id for f in frames]
    wait_until(lambda: len(store.read_results(ids)) == 3, 90, "results from the new line")
