"""Multi-line routing, calibration and model rollout: the table on its own, then on the embedded stack."""

from __future__ import annotations

import itertools
import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from duoscan.cli import app
from duoscan.core import kafka_clients
from duoscan.models import load_model
from duoscan.producers.replay import synthetic_frames
from duoscan.producers.sdk import FramePublisher
from duoscan.schemas import DeadLetter
from duoscan.workers.routing import ModelRouter, read_routes
from duoscan.workers.store import ResultStore

from .conftest import cli, wait_for_items, wait_until


def copy_models(models_dir: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for p in models_dir.glob("*.pt"):
        shutil.copy(p, dest / p.name)
    return dest


def save_version(src: Path, dest: Path, threshold: float) -> Path:
    """A new model file (new digest, so a new version) differing only in its threshold."""
    m = load_model(src)
    m.threshold = threshold
    m.category = m.category or src.stem  # what it was fitted on, not what the new file is called
    return m.save(dest)


def write_routes(folder: Path, text: str) -> Path:
    path = folder / "routes.toml"
    path.write_text(text)
    return path


def test_routes_pick_the_most_specific_model_and_threshold(models_dir, tmp_path):
    folder = copy_models(models_dir, tmp_path / "m")
    save_version(folder / "puck.pt", folder / "puck-l2.pt", 0.25)
    write_routes(
        folder,
        """
[[route]]
category = "puck"
model = "puck.pt"

[[route]]
line = "L2"
category = "puck"
model = "puck-l2.pt"

[[route]]
line = "L3"
station = "S9"
category = "puck"
model = "puck.pt"
threshold = 123.0

[[route]]
category = "ring"
model = "ring.pt"
""",
    )
    router = ModelRouter(folder, "cpu")
    base, l2 = router.resolve("L1", "S1", "puck"), router.resolve("L2", "S1", "puck")
    assert base.path.name == "puck.pt" and base.threshold == load_model(folder / "puck.pt").threshold
    assert l2.path.name == "puck-l2.pt" and l2.threshold == 0.25 and l2.version != base.version
    assert (
        router.resolve("L3", "S9", "puck").threshold == 123.0 and router.resolve("L3", "S9", "puck").model is base.model
    )
    assert router.resolve("L3", "S1", "puck").threshold == base.threshold, "station-specific route only for S9"
    assert router.resolve("L1", "S1", "hexnut") is None, "hexnut.pt is loaded but not routed"
    assert router.resolve("L1", "S1", "ring").path.name == "ring.pt"
    assert len({id(r.model) for r in router.table.by_path.values()}) == len(list(folder.glob("*.pt"))), (
        "each file loaded once"
    )


@pytest.mark.parametrize(
    "body, message",
    [
        ('[[route]]\ncategory = "puck"\nmodel = "puck.pt"\nweight = 2\n', "unknown key(s) weight"),
        ('[[route]]\ncategory = "puck"\nmodel = "nope.pt"\n', "nope.pt does not exist"),
        ('[[route]]\ncategory = "puck"\n', "needs category and model"),
        (
            '[[route]]\nline = "L1"\ncategory = "puck"\nmodel = "puck.pt"\n'
            '[[route]]\nline = "L1"\ncategory = "puck"\nmodel = "ring.pt"\n',
            "routes 1 and 2 both match",
        ),
        ("route = [", "routes file"),
    ],
)
def test_routes_file_errors_name_the_problem(models_dir, tmp_path, body, message):
    folder = copy_models(models_dir, tmp_path / "m")
    path = write_routes(folder, body)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_routes(path)
    with pytest.raises(ValueError):
        ModelRouter(folder, "cpu")  # a worker refuses to start on a bad table


def test_a_route_to_a_model_of_another_category_is_refused(models_dir, tmp_path):
    folder = copy_models(models_dir, tmp_path / "m")
    write_routes(folder, '[[route]]\ncategory = "puck"\nmodel = "ring.pt"\n')
    with pytest.raises(ValueError, match="ring.pt \\(trained on 'ring'\\) for 'puck'"):
        ModelRouter(folder, "cpu")


def test_refresh_swaps_new_files_and_keeps_the_old_version_of_a_broken_one(models_dir, tmp_path, caplog):
    folder = copy_models(models_dir, tmp_path / "m")
    router = ModelRouter(folder, "cpu")
    first = router.resolve("L1", "S1", "puck")
    assert router.refresh() == [], "nothing changed"
    save_version(folder / "puck.pt", folder / "puck.pt", 0.5)
    changes = router.refresh()
    second = router.resolve("L1", "S1", "puck")
    assert len(changes) == 1 and "puck.pt" in changes[0]
    assert second.version != first.version and second.threshold == 0.5
    assert (
        router.resolve("L1", "S1", "ring") is not None
        and router.resolve("L1", "S1", "ring").model is router.table.by_path[folder.resolve() / "ring.pt"].model
    )

    spare = save_version(folder / "puck.pt", tmp_path / "puck-fixed.pt", 0.7)
    (folder / "puck.pt").write_bytes(b"half a file")
    assert router.refresh() == []
    assert router.resolve("L1", "S1", "puck").version == second.version, "a broken file keeps the running version"
    assert "keeping version" in caplog.text
    shutil.copy(spare, folder / "puck.pt")  # fixed: retried on the next refresh
    assert router.refresh() and router.resolve("L1", "S1", "puck").threshold == 0.7


def test_two_files_for_one_category_need_a_routes_file(models_dir, tmp_path):
    folder = copy_models(models_dir, tmp_path / "m")
    save_version(folder / "puck.pt", folder / "puck-new.pt", 0.4)
    with pytest.raises(ValueError, match="both serve category 'puck'.*routes.toml"):
        ModelRouter(folder, "cpu")
    write_routes(folder, '[[route]]\ncategory = "puck"\nmodel = "puck-new.pt"\n')
    assert ModelRouter(folder, "cpu").resolve("L1", "S1", "puck").threshold == 0.4


@pytest.mark.integration
def test_calibrated_models_serve_their_lines_end_to_end(settings, start_worker, dataset, models_dir, tmp_path):
    folder = copy_models(models_dir, tmp_path / "m")
    calibrated = folder / "puck-l2.pt"
    result = CliRunner().invoke(
        app,
        [
            "calibrate",
            "--model",
            str(folder / "puck.pt"),
            "--data",
            str(dataset),
            "--category",
            "puck",
            "--target-fpr",
            "0.5",
            "--out",
            str(calibrated),
        ],
    )
    assert result.exit_code == 0, result.output
    write_routes(
        folder,
        '[[route]]\ncategory = "puck"\nmodel = "puck.pt"\n\n'
        '[[route]]\nline = "B"\ncategory = "puck"\nmodel = "puck-l2.pt"\n',
    )
    kafka_clients.ensure_topics(settings, ["A", "B"])
    start_worker(settings, models=[folder])
    frames = {
        line: [f for f in itertools.islice(synthetic_frames(line, "S1", seed=5, size=64), 40) if f.category == "puck"][
            :6
        ]
        for line in ("A", "B")
    }
    ring = next(f for f in synthetic_frames("A", "S1", seed=6, size=64) if f.category == "ring")
    with FramePublisher(settings) as pub:
        for f in [*frames["A"], *frames["B"], ring]:
            pub.publish_frame(f)
    store = ResultStore(settings)
    ids = [f.frame_id for fs in frames.values() for f in fs]
    results = wait_for_items(lambda: store.read_results(ids), len(ids), 120, "results on both lines")
    base, cal = load_model(folder / "puck.pt"), load_model(calibrated)
    assert cal.threshold < base.threshold, "a looser target FPR calibrates a lower threshold"
    for line, model in (("A", base), ("B", cal)):
        for f in frames[line]:
            r = results[f.frame_id]
            assert r.threshold == pytest.approx(model.threshold), f"line {line} scored by its own model"
            assert r.verdict == ("anomalous" if r.score > model.threshold else "ok")
    assert (
        len(
            {results[f.frame_id].model_version for f in frames["A"]}
            | {results[f.frame_id].model_version for f in frames["B"]}
        )
        == 2
    )
    dead = wait_for_items(
        lambda: kafka_clients.read_topic(settings, settings.dlq_topic), 1, 60, "the unrouted ring frame dead-lettered"
    )
    letter = DeadLetter.decode(dead[0])
    assert letter.frame_id == ring.frame_id and "no model for category 'ring' on line 'A'" in letter.reason


@pytest.mark.integration
def test_a_model_swap_during_the_stream_loses_no_frame(settings, start_worker, models_dir, tmp_path, monkeypatch):
    folder = copy_models(models_dir, tmp_path / "m")
    settings = settings.replace(model_poll_s=0.5)
    kafka_clients.ensure_topics(settings, ["R"])
    start_worker(settings, models=[folder])
    store = ResultStore(settings)
    frames = list(itertools.islice(synthetic_frames("R", "S1", seed=9, size=64), 90))
    old_version = ModelRouter(folder, "cpu").resolve("R", "S1", frames[0].category).version

    def publish() -> None:
        with FramePublisher(settings) as pub:
            for f in frames:
                pub.publish_frame(f)
                pub.flush()
                time.sleep(0.05)

    sender = threading.Thread(target=publish)
    sender.start()
    ids = [f.frame_id for f in frames]
    wait_for_items(lambda: store.read_results(ids), 25, 120, "the stream under way")
    category = frames[0].category
    save_version(folder / f"{category}.pt", folder / f"{category}.pt", 0.123)  # atomic replace, as `duoscan train` does
    sender.join()
    results = wait_for_items(lambda: store.read_results(ids), len(ids), 120, "every frame scored")
    assert set(results) == set(ids), "no frame lost across the swap"
    assert store.stats().get("redelivered", 0) == 0, "the swap needs no restart or redelivery"
    versions = [
        results[f.frame_id].model_version for f in frames if f.category == category
    ]  # one partition: publish order
    new_version = versions[-1]
    assert new_version != old_version and versions[0] == old_version
    switch = versions.index(new_version)
    assert set(versions[:switch]) == {old_version} and set(versions[switch:]) == {new_version}, (
        "one switch, between batches, never back"
    )
    assert all(
        results[f.frame_id].threshold == 0.123
        for f in frames
        if f.category == category and results[f.frame_id].model_version == new_version
    )
    workers = wait_until(
        lambda: [w for w in store.workers().values() if new_version in w.get("models", "")],
        30,
        "the worker reporting its new model",
    )
    assert workers

    for k, v in settings.to_env().items():
        monkeypatch.setenv(k, v)
    ok = CliRunner().invoke(app, ["health", "--worker", "--within", "30"])
    assert ok.exit_code == 0, ok.output
    monkeypatch.setenv("DUOSCAN_REDIS_URL", "redis://127.0.0.1:1/0")
    started = time.monotonic()
    bad = cli("health")
    assert bad.exit_code == 1 and bad.stderr.startswith("unhealthy: Redis at redis://127.0.0.1:1/0 is not reachable")
    assert time.monotonic() - started < 10, "a health check answers well within compose's 20 s timeout"


def test_per_category_counts_are_what_the_stream_sent():
    """Guard for the rollout test's premise: its frames cover several categories, one partition."""
    frames = list(itertools.islice(synthetic_frames("R", "S1", seed=9, size=64), 90))
    counts = Counter(f.category for f in frames)
    assert len(counts) >= 2 and counts[frames[0].category] >= 20
    assert len({f.station for f in frames}) == 1


@pytest.mark.integration
def test_stations_command_predicts_where_the_broker_puts_each_station(settings):
    """`duoscan stations` is what operators size a line's workers by: it must match the real placement."""
    s = settings.replace(partitions=4)
    kafka_clients.ensure_topics(s, ["L7"])
    names = [f"S{i}" for i in range(8)]
    placed = {}
    with FramePublisher(s) as pub:
        for name in names:
            frame = next(synthetic_frames("L7", name, categories=("ring",), size=32))
            placed[name] = pub.publish_frame(frame)
        pub.flush()
    placed = {name: fut.get(timeout=30).partition for name, fut in placed.items()}
    assert len(set(placed.values())) > 1, "eight stations over four partitions cannot all land on one"
    result = CliRunner().invoke(app, ["stations", "--line", "L7", "--partitions", "4", *names])
    assert result.exit_code == 0, result.output
    rows = {
        int(line.split("│")[1]): line.split("│")[2].split()
        for line in result.output.splitlines()
        if line.startswith("│")
    }
    assert {name: p for p, members in rows.items() for name in members if name != "-"} == placed
    per_partition = [list(placed.values()).count(p) for p in range(4)]
    assert ("uneven" in result.output) == (max(per_partition) - min(per_partition) > 1)
