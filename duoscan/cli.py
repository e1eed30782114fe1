"""The ``duoscan`` command line."""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .config import SERVICES_FILE, STATE_DIR, Settings

app = typer.Typer(help="duoscan: streaming 2D+3D anomaly inspection.", no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False)
console = Console()


def _logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@app.command()
def up(lines: str = typer.Option("L1,L2", help="comma-separated line ids whose topics to create")) -> None:
    """Start the embedded broker (Tansu) and Redis (valkey) in the background."""
    from . import kafka_clients
    from .embedded import EmbeddedBroker, EmbeddedRedis

    if SERVICES_FILE.exists():
        console.print(f"[yellow]already up[/] ({SERVICES_FILE}); run `duoscan down` first")
        raise typer.Exit(1)
    logs = STATE_DIR / "logs"
    broker = EmbeddedBroker(log_path=logs / "broker.log").start()
    redis_server = EmbeddedRedis(log_path=logs / "redis.log").start()
    state = {"bootstrap_servers": broker.bootstrap, "redis_url": redis_server.url, "pids": [broker.pid, redis_server.pid]}
    SERVICES_FILE.write_text(json.dumps(state, indent=2))
    kafka_clients.ensure_topics(Settings.load(), [x for x in lines.split(",") if x])
    console.print(f"broker  [bold]{broker.bootstrap}[/]\nredis   [bold]{redis_server.url}[/]\nstate   {SERVICES_FILE} (other commands pick these up)")


@app.command()
def down() -> None:
    """Stop what `duoscan up` started."""
    if not SERVICES_FILE.exists():
        console.print("nothing is up")
        return
    for pid in json.loads(SERVICES_FILE.read_text()).get("pids", []):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    SERVICES_FILE.unlink()
    console.print("stopped")


@app.command()
def synth(
    out: Path = typer.Option(Path("data/synthetic"), help="output folder (MVTec 3D-AD layout)"),
    size: int = typer.Option(128, help="image side in pixels"),
    train: int = typer.Option(40, help="good training frames per category"),
    validation: int = typer.Option(10, help="good validation frames per category"),
    test_good: int = typer.Option(10, help="good test frames per category"),
    test_per_defect: int = typer.Option(6, help="test frames per defect type and category"),
    categories: str = typer.Option("ring,puck,hexnut", help="comma-separated categories"),
    seed: int = typer.Option(0),
) -> None:
    """Render synthetic parts with defects and masks in MVTec 3D-AD's layout."""
    from producers.dataset import write_synthetic_dataset

    write_synthetic_dataset(out, tuple(categories.split(",")), size, train, validation, test_good, test_per_defect, seed)
    console.print(f"wrote {out}")


@app.command()
def train(
    data: Path = typer.Option(..., help="dataset root in MVTec 3D-AD layout"),
    out: Path = typer.Option(Path("models/trained"), help="where <category>.pt files go"),
    method: str = typer.Option("baseline", help="registered method name"),
    category: Optional[list[str]] = typer.Option(None, help="categories to train (default: all in DATA)"),
    target_fpr: float = typer.Option(0.01, help="threshold = this quantile of good validation scores from the top"),
) -> None:
    """Fit a method on good training frames, calibrate its threshold on validation, save one file per category."""
    from models import create
    from producers.dataset import categories_in, iter_samples

    table = Table("category", "method", "train frames", "threshold", "file")
    for cat in category or categories_in(data):
        frames = list(iter_samples(data, cat, "train"))
        model = create(method).fit(frames)
        model.calibrate(iter_samples(data, cat, "validation"), target_fpr)
        path = model.save(out / f"{cat}.pt")
        table.add_row(cat, method, str(len(frames)), f"{model.threshold:.3f}", str(path))
    console.print(table)


@app.command()
def produce(
    source: str = typer.Option("synthetic", help="'synthetic' or an MVTec-layout folder to replay"),
    line: str = typer.Option("L1"),
    station: str = typer.Option("S1"),
    fps: float = typer.Option(10.0, help="frames per second (0 = as fast as possible)"),
    count: int = typer.Option(100, help="frames to send"),
    defect_rate: float = typer.Option(0.1, help="synthetic only: share of defective parts"),
    size: int = typer.Option(128, help="synthetic only: image side"),
    split: str = typer.Option("test", help="folder only: which split to replay"),
    seed: int = typer.Option(0),
) -> None:
    """Publish frames to frames.<line>, keyed by line/station."""
    from rich.progress import track

    from producers.replay import dataset_frames, paced, synthetic_frames
    from producers.sdk import FramePublisher

    _logging("WARNING")
    frames = synthetic_frames(line, station, seed=seed, defect_rate=defect_rate, size=size) if source == "synthetic" else dataset_frames(Path(source), line, station, split)
    with FramePublisher(Settings.load()) as pub:
        for frame in track(paced(frames, fps, count), total=count, description=f"publishing to {pub.settings.frames_topic(line)}"):
            pub.publish_frame(frame)
    console.print(f"published {pub.sent} frames")


@app.command()
def work(
    models_dir: Path = typer.Option(Path("models/trained"), "--models", help="folder of <category>.pt model files"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    max_batch: Optional[int] = typer.Option(None, help="micro-batch size limit"),
    max_wait: Optional[float] = typer.Option(None, help="micro-batch wait limit in seconds"),
    loglevel: str = typer.Option("info"),
) -> None:
    """Run one worker; start several to share the partitions of every frames.* topic."""
    from workers.app import run_worker

    _logging(loglevel)
    run_worker(Settings.load(max_batch=max_batch, max_wait_s=max_wait), str(models_dir), device, loglevel)


@app.command()
def alerts(
    follow: bool = typer.Option(True, help="keep waiting for new alerts"),
    group: str = typer.Option("duoscan-alerts", help="consumer group (offsets are committed)"),
) -> None:
    """Print alerts as JSON lines, as an MES adapter would consume them."""
    from workers.alerts import follow_alerts

    for alert in follow_alerts(Settings.load(), group=group, follow=follow):
        print(alert.to_json(), flush=True)


@app.command()
def config() -> None:
    """Print the effective configuration (secrets masked)."""
    console.print_json(json.dumps(Settings.load().masked()))


@app.command()
def demo(
    frames: int = typer.Option(240, help="frames to stream (split over 2 lines)"),
    workers: int = typer.Option(2, help="worker processes"),
    fps: float = typer.Option(20.0, help="total publish rate (frames/s over both lines)"),
    out: Path = typer.Option(Path("out"), help="heatmap overlays and summary go here"),
) -> None:
    """The whole product on one machine: embedded broker + Redis, synthetic parts, workers, summary."""
    from .demo import run_demo

    _logging("WARNING")
    run_demo(frames=frames, n_workers=workers, fps=fps, out=out)


if __name__ == "__main__":
    app()
