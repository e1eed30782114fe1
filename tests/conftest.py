"""Real infrastructure for tests: a Tansu broker and a valkey server on free loopback ports."""

from __future__ import annotations

import io
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

from duoscan import stack
from duoscan.core.config import Settings
from duoscan.embedded import EmbeddedBroker, EmbeddedRedis
from duoscan.stack import spawn_worker

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def cli(*args: str) -> CliResult:
    """Run ``duoscan ARGS`` in this process through its real entry point (``duoscan.cli.main``: the error
    contract lives there), capturing stdout and stderr apart."""
    from duoscan.cli import main

    out, err = io.StringIO(), io.StringIO()
    code: object = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code
    return CliResult(code if isinstance(code, int) else (0 if code is None else 1), out.getvalue(), err.getvalue())


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``make test-fast``: one process per core) each process computes on one thread, so two
    processes do not fight over the same two cores."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


SERVICE_FIXTURES = {"broker", "redis_server", "settings", "start_worker"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that starts the broker or Redis ``integration`` (through a fixture, or inline), so
    ``make test-fast`` (``-m "not integration"``) runs only the rest."""
    import inspect

    for item in items:
        fn = getattr(item, "function", None)
        source = inspect.getsource(fn) if fn else ""
        if (
            SERVICE_FIXTURES & set(getattr(item, "fixturenames", ()))
            or "EmbeddedBroker(" in source
            or "EmbeddedRedis(" in source
        ):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def feature_cache(tmp_path_factory) -> str:
    """One feature cache for the session: it is keyed by frame content and extractor settings, so the tests that
    train on the same fixture frames compute their backbone and 3D features once. Under pytest-xdist the worker
    processes share it (the run's base directory), since each renders the same deterministic fixture frames."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return str(tmp_path_factory.getbasetemp().parent / "feature-cache")
    return str(tmp_path_factory.mktemp("feature-cache"))


@pytest.fixture(scope="session")
def broker(tmp_path_factory) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(log_path=tmp_path_factory.mktemp("logs") / "broker.log") as b:
        yield b


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(log_path=tmp_path_factory.mktemp("logs") / "redis.log") as r:
        yield r


@pytest.fixture
def settings(broker, redis_server) -> Settings:
    """Settings isolated per test: own topics, consumer group and Redis key prefix."""
    return Settings.isolated(
        "t" + uuid.uuid4().hex[:8],
        bootstrap_servers=broker.bootstrap,
        redis_url=redis_server.url,
        partitions=2,
        new_topic_poll_s=2.0,
    )


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    from duoscan.producers.dataset import write_synthetic_dataset

    return write_synthetic_dataset(
        tmp_path_factory.mktemp("synthetic"),
        size=64,
        n_train=12,
        n_validation=8,
        n_test_good=4,
        n_test_per_defect=2,
        progress=False,
    )


@pytest.fixture(scope="session")
def models_dir(dataset, tmp_path_factory) -> Path:
    return stack.fit_baseline_models(dataset, tmp_path_factory.mktemp("models"))


@pytest.fixture
def start_worker(tmp_path, models_dir) -> Iterator[Callable[..., subprocess.Popen]]:
    """Start `duoscan work` processes; all are stopped (SIGTERM, then SIGKILL) at teardown."""
    procs: list[subprocess.Popen] = []

    def start(settings: Settings, name: str = "w0", models: list[Path] | None = None) -> subprocess.Popen:
        p = spawn_worker(settings, models or [models_dir], tmp_path / f"{name}.log")
        procs.append(p)
        return p

    yield start
    stack.stop_workers(procs, 20)


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.2) -> object:
    try:
        return stack.wait_until(predicate, timeout, what, interval)
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from None


def wait_for_join(store, timeout: float = 90) -> None:
    """Until some worker of this test's group reports partitions in Redis."""
    wait_until(lambda: any(i.get("partitions") for i in store.workers().values()), timeout, "a worker to join")


def wait_for_items(fetch: Callable[[], list | dict], n: int, timeout: float, what: str) -> list | dict:
    """Poll ``fetch`` until it returns at least ``n`` items; return them."""
    box: dict = {}

    def enough() -> bool:
        box["v"] = fetch()
        return len(box["v"]) >= n

    wait_until(enough, timeout, what)
    return box["v"]


def process_frames(settings: Settings, model_path: Path, frames: list, line: str, partition: int = 0):
    """Run ``frames`` through a real BatchProcessor serving ``model_path`` (real broker and Redis);
    returns the batch report and the result store to read back from."""
    from duoscan.core import kafka_clients
    from duoscan.workers.processor import BatchProcessor, Incoming
    from duoscan.workers.routing import ModelRouter
    from duoscan.workers.store import ResultStore

    kafka_clients.ensure_topics(settings, [line])
    store = ResultStore(settings)
    proc = BatchProcessor(settings, ModelRouter([model_path], "auto"), store, kafka_clients.producer(settings))
    report = proc.process(
        [Incoming(settings.frames_topic(line), partition, i, f.encode()) for i, f in enumerate(frames)]
    )
    return report, store


def served_puck_results(settings: Settings, start_worker, model_path: Path, line: str, n: int) -> dict:
    """Start a real worker process serving ``model_path``, publish ``n`` synthetic puck frames
    (about half defective) on ``line`` and return their results once all have landed."""
    import itertools

    from duoscan.core import kafka_clients
    from duoscan.producers.replay import synthetic_frames
    from duoscan.producers.sdk import FramePublisher
    from duoscan.workers.store import ResultStore

    kafka_clients.ensure_topics(settings, [line])
    start_worker(settings, models=[model_path])
    frames = [
        f
        for f in itertools.islice(synthetic_frames(line, "S1", seed=4, defect_rate=0.5, size=64), 40)
        if f.category == "puck"
    ][:n]
    with FramePublisher(settings) as pub:
        for f in frames:
            pub.publish_frame(f)
    store = ResultStore(settings)
    return wait_for_items(
        lambda: store.read_results([f.frame_id for f in frames]), len(frames), 120, f"results on {line}"
    )


def standardised_features(model, frames: list) -> tuple[list, dict, dict]:
    """What a feature method scores from: prepared frames, standardised features and validity."""
    prepared, feats, valid = model._features_on_device(frames)
    return prepared, model._standardise(feats), valid


def deepened_cell(model, frames: list) -> tuple[dict, dict, tuple[int, int]]:
    """Standardised features of ``frames`` and a copy whose first frame has its 3D feature ×10 at the measured cell
    furthest from the mean 3D feature (a deeper defect of the same shape), and that cell."""
    _, feats, valid = standardised_features(model, frames)
    norm = feats["xyz"][0].norm(dim=0) * (valid["xyz"][0] > 0)
    y, x = divmod(int(norm.argmax()), norm.shape[1])
    scaled = {m: v.clone() for m, v in feats.items()}
    scaled["xyz"][0, :, y, x] *= 10
    return feats, scaled, (y, x)
