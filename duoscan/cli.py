"""The ``duoscan`` command line."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console
from rich.table import Table

from duoscan.models.catalog import METHODS, MODALITIES

from .core import preflight
from .core.config import DEVICE_PATTERN, Settings, cache_dir, mask_url, services_file, state_dir
from .core.errors import UserError, one_line
from .diagnose import describe

HELP = f"""duoscan: streaming 2D+3D anomaly inspection.

State of `duoscan up` (broker and Redis addresses, logs) lives in {state_dir()} whatever the working directory
(DUOSCAN_STATE_DIR moves it); the feature cache in {cache_dir()}. A mistake in arguments, configuration or
data ends with one line on stderr and exit code 2; --debug (or DUOSCAN_DEBUG=1) shows the traceback instead."""

app = typer.Typer(help=HELP, no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False)
console = Console()
DEFAULT_MODELS = Path("out/models")  # `train` writes here, `work` serves from here (relative to where you run them)
FEATURE_CACHE = cache_dir() / "features"


def main(argv: list[str] | None = None) -> None:
    """The ``duoscan`` entry point: the commands, with every user error reduced to one line and exit code 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("DUOSCAN_DEBUG", "") not in ("", "0")
    try:
        code = app(args=args, prog_name="duoscan", standalone_mode=False)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the contract: no traceback unless asked for
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `duoscan`: the help was printed, nothing went wrong
            sys.exit(0)
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # click's usage errors: one line, not a panel
            command = exc.ctx.command_path if getattr(exc, "ctx", None) else "duoscan"
            typer.echo(f"error: {one_line(exc.format_message())} (see `{command} --help`)", err=True)
            sys.exit(exc.exit_code)
        if debug:
            raise
        message = describe(exc)
        if message is None:  # not a user error: a bug; still one line, and how to see more
            typer.echo(
                f"internal error: {type(exc).__name__}: {one_line(exc)} (run with --debug for the traceback)", err=True
            )
            sys.exit(1)
        typer.echo(f"error: {message}", err=True)
        sys.exit(2)
    if isinstance(code, int) and code:
        sys.exit(code)


# commands that only talk to the broker, Redis or the state files
NO_COMPUTE = frozenset({"up", "down", "topics", "health", "config", "stations", "alerts", "view"})


@app.callback()
def _configure(
    ctx: typer.Context,
    debug: bool = typer.Option(
        False, "--debug", help="show the traceback of an error instead of one line (also DUOSCAN_DEBUG=1)"
    ),
) -> None:
    """Apply the process-wide compute settings (backbone runtime, threads) before a command that computes."""
    if ctx.invoked_subcommand in NO_COMPUTE:
        return  # these never load torch: they start in a fraction of a second
    try:
        settings = Settings.load().check()
    except ValueError:
        return  # a broken setting: each command that uses the settings loads them again and says which one
    apply_compute_settings(settings)


def apply_compute_settings(settings: Settings) -> None:
    import torch

    from duoscan.models.runtime import set_runtime

    set_runtime(settings.backbone_runtime, settings.onnx_cache_dir or None)
    if settings.torch_threads > 0:
        torch.set_num_threads(settings.torch_threads)
    if settings.blas_threads > 0:
        import scipy.linalg  # noqa: F401  (loads SciPy's own OpenBLAS, so the limit reaches it too)
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=settings.blas_threads, user_api="blas")  # process-wide, not only a with-block


def _fail(message: object) -> NoReturn:
    """A usage or configuration error: one line on stderr, exit 2."""
    raise UserError(one_line(message))


def _checked_settings(**overrides: object) -> Settings:
    """The effective settings, validated; a bad one ends the command naming the variable (exit 2)."""
    return Settings.load(**overrides).check()


def _choice(option: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        _fail(f"{option} {value!r} is not one of {', '.join(allowed)}")
    return value


def _device(value: str) -> str:
    """The device to run on: 'cuda' on a host without CUDA falls back to the CPU with a warning, not silently."""
    import re

    import torch

    if not re.fullmatch(DEVICE_PATTERN, value):
        _fail(f"--device {value!r} is not one of auto, cpu, cuda, cuda:N")
    if value.startswith("cuda") and not torch.cuda.is_available():  # GPU code falls back to the CPU, visibly
        typer.echo(f"warning: --device {value}: this machine has no CUDA device; running on the CPU", err=True)
    from duoscan.models import resolve_device

    return resolve_device(value)


def _method_spec(spec: str, evaluation_options: tuple[str, ...] = ()) -> tuple[str, str | None, dict[str, object]]:
    """``method[:modality][:key=value...]`` checked before any work starts: a registered method, a modality, and
    options the method takes (``evaluation_options`` are the benchmark's own, e.g. ``blank_xyz``)."""
    from duoscan.models import check_options

    from .evaluate import parse_spec

    name, modality, options = parse_spec(spec)
    if name not in METHODS:
        _fail(f"unknown method {name!r}: use one of {', '.join(sorted(METHODS))}")
    if modality:
        _choice("modality", modality, tuple(MODALITIES))
    check_options(name, set(options) - set(evaluation_options))
    return name, modality, options


def _logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@app.command()
def up(lines: str = typer.Option("L1,L2", help="comma-separated line ids whose topics to create")) -> None:
    """Start the embedded broker (Tansu) and Redis (valkey) in the background."""
    from . import services
    from .core import kafka_clients
    from .embedded import EmbeddedBroker, EmbeddedRedis

    names = _line_ids(lines)
    procs = services.recorded()  # the state file, read once
    if services.running(procs):
        _fail(f"already up ({services_file()}); run `duoscan down` first")
    if procs is not None:
        console.print(f"[yellow]stale state[/] in {services_file()} (its processes are gone): replacing it")
    logs = state_dir() / "logs"
    broker = EmbeddedBroker(log_path=logs / "broker.log").start()
    redis_server = EmbeddedRedis(log_path=logs / "redis.log").start()
    services.record(broker.bootstrap, redis_server.url, [broker.pid, redis_server.pid])
    kafka_clients.ensure_topics(_checked_settings(), names)
    console.print(
        f"broker  [bold]{broker.bootstrap}[/]\nredis   [bold]{redis_server.url}[/]\nstate   {services_file()} "
        "(other commands pick these up)"
    )


@app.command()
def topics(lines: str = typer.Option("L1,L2", help="comma-separated line ids: one frames.<line> topic each")) -> None:
    """Create the line topics plus the alerts and dead-letter topics if missing (the compose bootstrap job;
    idempotent)."""
    from .core import kafka_clients

    settings = _checked_settings()
    preflight.broker(settings)
    try:
        names = kafka_clients.ensure_topics(settings, _line_ids(lines))
    except RuntimeError as exc:  # no broker reachable
        _fail(exc)
    t = Table("topic", "partitions", "replication", "max message bytes", "retention")
    for name in names:
        frames = settings.is_frames_topic(name)
        cfg = kafka_clients.topic_configs(settings, frames)
        retention = f"{settings.frames_retention_ms / 3_600_000:g} h" if frames else "broker default"
        t.add_row(
            name,
            str(settings.partitions if frames else 1),
            str(settings.replication_factor),
            cfg["max.message.bytes"],
            retention,
        )
    console.print(t)


@app.command()
def health(
    worker: bool = typer.Option(
        False, "--worker", help="also require a worker process on this host to have reported recently"
    ),
    within: float = typer.Option(60.0, help="seconds within which the worker must have reported (with --worker)"),
) -> None:
    """Exit 0 if Kafka and Redis answer (and, with --worker, this host's worker is alive): the containers' health
    check."""
    import socket
    import time

    from duoscan.workers.store import ResultStore

    from .core import kafka_clients

    try:
        settings = Settings.load().check()
        preflight.broker(settings)  # seconds, not the client's half-minute of retries (compose waits 20 s)
        preflight.redis(settings)
        client = kafka_clients.admin(settings, timeout_s=3.0)
        try:
            client.list_topics()
        finally:
            client.close()
        store = ResultStore(settings)  # preflight.redis has pinged it with our credentials
        if worker:
            host = socket.gethostname()
            seen = [float(w.get("seen", 0)) for wid, w in store.workers().items() if wid.startswith(f"{host}-")]
            if not seen or time.time() - max(seen) > within:
                raise RuntimeError(f"no worker on {host} reported in the last {within:g} s")
    except Exception as exc:  # any failure is unhealthy; say which
        typer.echo(f"unhealthy: {describe(exc) or one_line(exc)}", err=True)
        raise typer.Exit(1) from None
    console.print("healthy")


@app.command()
def down() -> None:
    """Stop what `duoscan up` started (only processes whose command line and start time still match the record)."""
    from . import services

    if services.recorded() is None:
        console.print("nothing is up")
        return
    stopped, skipped = services.stop()
    if skipped:
        console.print(
            f"[yellow]not touched[/] PID {', '.join(map(str, skipped))}: no longer the process `duoscan up` "
            "started (stale state)"
        )
    console.print(f"stopped {len(stopped)} process{'es' if len(stopped) != 1 else ''}")


@app.command()
def synth(
    out: Path = typer.Option(Path("data/synthetic"), help="output folder (MVTec 3D-AD layout)"),
    profile: str = typer.Option(
        "fast",
        help="fast: 128 px, 3 categories (demo, tests); "
        "standard: 400 px, 6 categories, the development benchmark that ranks methods; "
        "realistic: the same parts with subtle defects (the hard level)",
    ),
    size: int | None = typer.Option(None, help="image side in pixels (default: the profile's)"),
    train: int | None = typer.Option(None, help="good training frames per category (default: the profile's)"),
    validation: int | None = typer.Option(None, help="good validation frames per category"),
    test_good: int | None = typer.Option(None, help="good test frames per category"),
    test_per_defect: int | None = typer.Option(None, help="test frames per defect type and category"),
    categories: str | None = typer.Option(None, help="comma-separated categories (default: all of the profile's)"),
    seed: int = typer.Option(0, help="another seed renders wholly new parts (seed 1 is the project's tuning set)"),
) -> None:
    """Render synthetic parts with defects and masks in MVTec 3D-AD's layout."""
    from duoscan.producers.dataset import PROFILES, write_synthetic_dataset

    if profile not in PROFILES:
        _fail(f"unknown profile {profile!r}: use one of {', '.join(PROFILES)}")
    cats = tuple(categories.split(",")) if categories else None
    unknown = sorted(set(cats or ()) - set(PROFILES[profile]["categories"]))
    if unknown:
        _fail(
            f"unknown {profile} categories {', '.join(unknown)}: use some of "
            f"{', '.join(PROFILES[profile]['categories'])}"
        )
    write_synthetic_dataset(out, cats, size, train, validation, test_good, test_per_defect, seed, profile=profile)
    console.print(f"wrote {out}")


@app.command("synth-anomalies")
def synth_anomalies(
    data: Path = typer.Option(Path("data/synthetic"), help="dataset root (MVTec 3D-AD or Eyecandies layout)"),
    category: str = typer.Option("puck", help="category whose good training frames to use"),
    out: Path = typer.Option(Path("out/synthetic-anomalies.png"), help="PNG to write"),
    n: int = typer.Option(4, min=1, help="good frames (rows)"),
    seed: int = typer.Option(0),
) -> None:
    """Preview the synthetic training anomalies (texture and Gaussian generators) on good frames."""
    from duoscan.models import with_all_inputs
    from duoscan.producers.dataset import check_category, iter_dataset

    from .evaluate import save_anomaly_preview

    check_category(data, category)
    samples = with_all_inputs(
        [s for _, s in zip(range(max(n, 2)), iter_dataset(data, category, "train"), strict=False)]
    )
    if not samples:
        _fail(f"no training frames for {category} in {data}")
    console.print(f"wrote {save_anomaly_preview(samples, out, n, seed)}")


@app.command()
def train(
    data: Path = typer.Option(..., help="dataset root (MVTec 3D-AD or Eyecandies layout)"),
    category: list[str] | None = typer.Option(None, help="categories to train (repeatable; default: all in DATA)"),
    method: str = typer.Option(
        "baseline",
        help="method[:modality][:key=value...], e.g. mafr:both:epochs=40 (as benchmark-table takes); methods: "
        + ", ".join(sorted(METHODS)),
    ),
    out: Path = typer.Option(
        DEFAULT_MODELS,
        help="MODEL.pt for one category, else a folder of <category>.pt (`work` serves out/models by default)",
    ),
    modality: str = typer.Option("both", help="rgb | xyz | both (methods that support it)"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    target_fpr: float = typer.Option(
        0.01, min=1e-6, max=0.5, help="threshold so about this share of good validation frames alert"
    ),
    cache: Path = typer.Option(FEATURE_CACHE, help="feature cache folder"),
    shots: int | None = typer.Option(None, min=1, help="few-shot: train on K good frames (a fixed seeded choice)"),
) -> None:
    """Fit a method on good training frames, calibrate its threshold on validation, save it."""
    from duoscan.producers.dataset import categories_in, check_category

    from .evaluate import train_model

    name, spec_modality, options = _method_spec(method)
    modality = spec_modality or _choice("--modality", modality, tuple(MODALITIES))  # the spec's modality wins
    dev = _device(device)
    cats = category or categories_in(data)
    for cat in cats:  # every category is checked before the first one trains
        check_category(data, cat)
    table = Table("category", "method", "modality", "threshold", "file")
    for cat in cats:
        model = train_model(data, cat, name, modality, dev, target_fpr, cache_dir=str(cache), shots=shots, **options)
        path = model.save(out if out.suffix == ".pt" and len(cats) == 1 else out / f"{cat}.pt")
        table.add_row(cat, method, modality, f"{model.threshold:.3f}", str(path))
    console.print(table)


@app.command()
def calibrate(
    model: Path = typer.Option(..., help="model file to recalibrate (rewritten in place unless --out)"),
    data: Path = typer.Option(..., help="dataset root with good frames of CATEGORY"),
    category: str = typer.Option(..., help="category whose good frames set the threshold"),
    target_fpr: float = typer.Option(0.01, min=1e-6, max=0.5, help="share of good frames that may alert"),
    split: str = typer.Option(
        "validation", help="split to take good frames from (never the test split for reported numbers)"
    ),
    out: Path | None = typer.Option(None, help="write the recalibrated model here instead"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
) -> None:
    """Set a model's decision threshold from good frames for a target false-positive rate; store it with the model."""
    from duoscan.models import load_model, with_all_inputs
    from duoscan.producers.dataset import SPLITS, check_category, iter_dataset

    _choice("--split", split, SPLITS)
    check_category(data, category)
    m = load_model(model, _device(device))
    _same_category(m, category, model)
    good = with_all_inputs([s for s in iter_dataset(data, category, split) if s.label == 0])
    if len(good) < 2:
        _fail(f"{len(good)} good frames of {category!r} in {data}/{category}/{split}; calibration needs at least 2")
    before = m.threshold
    m.calibrate(good, target_fpr)  # the model's own calibration (cmdr also re-fits its degraded-path scale)
    path = m.save(out or model)
    t = Table("model", "good frames", "target FPR", "threshold before", "threshold after", "file")
    t.add_row(
        f"{m.name} v{m.version}", str(len(good)), f"{target_fpr:g}", f"{before:.4f}", f"{m.threshold:.4f}", str(path)
    )
    console.print(t)


@app.command()
def evaluate(
    data: Path = typer.Option(..., help="dataset root (MVTec 3D-AD or Eyecandies layout)"),
    category: str = typer.Option(..., help="category to evaluate"),
    model: Path = typer.Option(..., help="model file from `duoscan train`"),
    json_out: Path = typer.Option(Path("out/eval.json"), "--json", help="report: metrics, image scores, timing"),
    maps: Path | None = typer.Option(None, help="write <defect>/<NNN>.tiff anomaly maps here"),
    panel: Path | None = typer.Option(None, help="PNG of worst and best cases (default: next to the JSON)"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    cache: Path = typer.Option(FEATURE_CACHE, help="feature cache folder (second runs reuse it)"),
    blank_xyz: float = typer.Option(
        0.0, min=0.0, max=1.0, help="depth-dropout drill: zero this share of test point clouds (seeded)"
    ),
) -> None:
    """Score the test split: I-AUROC, P-AUROC, AUPRO@30% and @1%, maps and a picture."""
    from duoscan.models import load_model
    from duoscan.producers.dataset import check_category

    from .evaluate import evaluate_model

    check_category(data, category)
    m = load_model(model, _device(device), cache_dir=str(cache))
    _same_category(m, category, model)
    rep = evaluate_model(m, data, category, json_out, maps, panel or json_out.with_suffix(".png"), blank_xyz=blank_xyz)
    t = Table("metric", "value")
    for k in (
        "i_auroc",
        "p_auroc",
        "aupro_30",
        "aupro_01",
        "n_test",
        "n_degraded",
        "i_auroc_blanked",
        "i_auroc_intact",
    ):
        if k not in rep:
            continue
        value = rep[k]
        t.add_row(
            k,
            ("n/a (needs good and defective test frames with gt/ masks)" if value != value else f"{value:.3f}")
            if isinstance(value, float)
            else str(value),
        )
    t.add_row("frames/s", f"{rep['timing']['fps']:.1f}")
    console.print(t)
    console.print(f"report {json_out}")


@app.command("benchmark-table")
def benchmark_table_cmd(
    data: Path = typer.Option(
        Path("data/synthetic"), help="dataset root; rendered with `duoscan synth` defaults if missing"
    ),
    methods: str = typer.Option(
        "baseline,btf:rgb,btf:xyz,btf:both",
        help="comma-separated method[:modality][:key=value...] specs, e.g. mafr:both:shots=5",
    ),
    categories: str | None = typer.Option(None, help="comma-separated (default: all)"),
    out: Path = typer.Option(Path("out/benchmark"), help="table.md, results.json and per-run reports"),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    cache: Path | None = typer.Option(None, help="feature cache folder (off by default so the timings are real)"),
    reference: str = typer.Option(
        "patchcore:both", help="when among --methods: every other method's difference to it, with 95 % intervals"
    ),
    draws: int = typer.Option(1000, min=0, help="paired bootstrap draws of the test frames for those intervals"),
) -> None:
    """Train + evaluate several methods on several categories; print one markdown table."""
    from duoscan.producers.dataset import categories_in, check_category, write_synthetic_dataset

    from .evaluate import benchmark_table

    specs = [m for m in methods.split(",") if m]
    for spec in specs:
        _method_spec(spec, evaluation_options=("blank_xyz", "shots"))
    dev = _device(device)
    if not data.exists():
        write_synthetic_dataset(data)
    cats = categories.split(",") if categories else categories_in(data)
    for cat in cats:
        check_category(data, cat)
    print(
        benchmark_table(
            data, specs, cats, out, dev, cache_dir=str(cache) if cache else None, reference=reference, draws=draws
        )
    )


@app.command()
def produce(
    source: str = typer.Option("synthetic", help="'synthetic' or an MVTec-layout folder to replay"),
    line: str = typer.Option("L1", help="line id: 1-64 characters of A-Z a-z 0-9 . _ -"),
    station: str = typer.Option("S1", help="station id (same characters)"),
    fps: float = typer.Option(10.0, min=0.0, help="frames per second (0 = as fast as possible)"),
    count: int = typer.Option(100, min=1, help="frames to send"),
    defect_rate: float = typer.Option(0.1, min=0.0, max=1.0, help="synthetic only: share of defective parts"),
    size: int = typer.Option(128, min=32, max=4096, help="synthetic only: image side"),
    split: str = typer.Option("test", help="folder only: which split to replay (train | validation | test)"),
    seed: int = typer.Option(0),
) -> None:
    """Publish frames to frames.<line>, keyed by line/station."""
    from rich.progress import track

    from duoscan.producers.dataset import SPLITS
    from duoscan.producers.replay import dataset_frames, paced, synthetic_frames
    from duoscan.producers.sdk import FramePublisher

    from .core import metrics

    _line_ids(line, "--line")
    _line_ids(station, "--station")
    _choice("--split", split, SPLITS)
    if source != "synthetic" and not Path(source).is_dir():
        _fail(f"--source {source} is not a folder: give 'synthetic' or an MVTec-layout dataset folder")
    _logging("WARNING")
    settings = _checked_settings()
    preflight.broker(settings)
    metrics.serve(settings)
    frames = (
        synthetic_frames(line, station, seed=seed, defect_rate=defect_rate, size=size)
        if source == "synthetic"
        else dataset_frames(Path(source), line, station, split)
    )
    with FramePublisher(settings) as pub:
        for frame in track(
            paced(frames, fps, count), total=count, description=f"publishing to {pub.settings.frames_topic(line)}"
        ):
            pub.publish_frame(frame)
    console.print(f"published {pub.sent} frames")


@app.command()
def stations(
    names: list[str] = typer.Argument(..., metavar="STATION...", help="the stations of one line"),
    line: str = typer.Option(..., help="the line they publish to"),
    partitions: int | None = typer.Option(
        None, min=1, help="partitions of the line's topic (default: DUOSCAN_PARTITIONS)"
    ),
) -> None:
    """Which partition each station's frames land on, so how evenly the line's workers can share it."""
    from duoscan.schemas import Frame

    from .core.kafka_clients import partition_for

    n = partitions or _checked_settings().partitions
    by_partition: dict[int, list[str]] = {p: [] for p in range(n)}
    for name in names:
        by_partition[partition_for(Frame.key_for(line, name), n)].append(name)
    table = Table("partition", "stations", "share of the line's frames (equal rates)")
    for p, members in by_partition.items():
        table.add_row(str(p), " ".join(members) or "-", f"{len(members) / len(names):.0%}")
    console.print(table)
    counts = [len(m) for m in by_partition.values()]
    if len(names) < n:  # fewer stations than partitions: some must stay empty
        counts = [c for c in counts if c]
    if max(counts) - min(counts) > 1:
        console.print(
            f"[yellow]uneven:[/yellow] one partition carries {max(counts)} of {len(names)} stations; the worker "
            "that holds it "
            f"bounds the line's throughput. Other station names or another partition count spread them differently."
        )


@app.command()
def work(
    model: list[Path] | None = typer.Option(
        None, "--model", "--models", help="model file or folder of <category>.pt files (repeatable)"
    ),
    device: str | None = typer.Option(None, help="auto | cpu | cuda (default: DUOSCAN_DEVICE, else auto)"),
    max_batch: int | None = typer.Option(None, help="micro-batch size limit"),
    max_wait: float | None = typer.Option(None, help="micro-batch wait limit in seconds"),
    loglevel: str = typer.Option("info"),
) -> None:
    """Run one worker; start several to share the partitions of every frames.* topic."""
    from duoscan.workers.app import run_worker

    settings = _checked_settings(device=device, max_batch=max_batch, max_wait_s=max_wait)  # checks --device's form too
    paths = model or [DEFAULT_MODELS]
    for path in paths:
        if not path.exists():
            _fail(f"model path {path} does not exist: train one with `duoscan train --out {path}` or pass --model")
    preflight.broker(settings)
    preflight.redis(settings)
    _logging(loglevel)
    run_worker(settings, [str(p) for p in paths], loglevel)


@app.command()
def alerts(
    follow: bool = typer.Option(True, help="keep waiting for new alerts"),
    group: str = typer.Option(
        "duoscan-alerts",
        help="consumer group: offsets are committed after every output took the alerts (at-least-once)",
    ),
    out: list[str] | None = typer.Option(
        None, "--out", help="JSON lines to '-' (stdout, the default) or appended to a file; repeatable"
    ),
    webhook: list[str] | None = typer.Option(
        None,
        "--webhook",
        help="POST each alert as JSON to this URL, retrying 5xx/429/timeouts with backoff; repeatable",
    ),
    header: list[str] | None = typer.Option(
        None, "--header", help="extra webhook header, 'Name: value' (e.g. an auth token); repeatable"
    ),
    max_backoff: float = typer.Option(30.0, help="longest wait between webhook retries, seconds"),
) -> None:
    """Forward alerts to an MES: JSON lines (stdout or a file) and/or HTTP webhooks; schema in
    schemas/alert.schema.json."""
    from duoscan.workers.forward import JsonLines, Webhook, forward_alerts, parse_header

    from .core import metrics

    _logging("WARNING")
    settings = _checked_settings()
    try:
        headers = dict(parse_header(h) for h in header or [])
    except ValueError as exc:
        _fail(exc)
    preflight.broker(settings)
    metrics.serve(settings)
    outputs = [JsonLines(o) for o in (out or ([] if webhook else ["-"]))]
    outputs += [Webhook(url, headers=headers, max_backoff_s=max_backoff) for url in webhook or []]
    forward_alerts(settings, outputs, group=group, follow=follow)


@app.command()
def view(
    host: str = typer.Option("127.0.0.1", help="address to listen on (0.0.0.0 to serve the floor)"),
    port: int = typer.Option(8080, min=1, max=65535, help="HTTP port"),
) -> None:
    """Serve the operator view: lines, latest verdicts with heatmap overlays, score trends, alerts, frame pages."""
    import socket

    import uvicorn

    from .view.app import create_app

    settings = _checked_settings()
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            _fail(f"cannot listen on {host}:{port} ({exc.strerror}): pick another --port or --host")
    console.print(f"operator view on [bold]http://{host}:{port}/[/] (Redis {mask_url(settings.redis_url)})")
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")


@app.command()
def config(
    action: str = typer.Argument("show", help="show: print the effective configuration; check: validate it"),
) -> None:
    """Print (`show`) or validate (`check`) the effective configuration; secrets are masked."""
    if action not in ("show", "check"):
        _fail(f"unknown action {action!r} (show | check)")
    settings = _checked_settings()
    if action == "show":
        console.print_json(json.dumps(settings.masked()))
    else:
        console.print("configuration ok")


@app.command()
def demo(
    frames: int = typer.Option(240, min=1, help="frames to stream (split over 2 lines)"),
    workers: int = typer.Option(2, min=1, help="worker processes"),
    fps: float = typer.Option(
        10.0,
        min=0.0,
        help="total publish rate (frames/s over both lines; 2 BridgeNet workers on 2 cores keep up with ~10)",
    ),
    out: Path = typer.Option(Path("out"), help="heatmap overlays and summary go here"),
    method: str = typer.Option(
        "bridgenet",
        help="method the workers serve (default: the best seed method on the tuning sets): "
        + ", ".join(sorted(METHODS)),
    ),
) -> None:
    """The whole product on one machine: embedded broker + Redis, synthetic parts, workers, summary."""
    from .demo import run_demo

    if method not in METHODS:
        _fail(f"unknown method {method!r}: use one of {', '.join(sorted(METHODS))}")
    _logging("WARNING")
    run_demo(frames=frames, n_workers=workers, fps=fps, out=out, method=method)


def _line_ids(value: str, option: str = "--lines") -> list[str]:
    """Comma-separated line or station ids, each as the wire contract allows (it names topics and keys)."""
    from duoscan.schemas import is_name

    ids = [x for x in value.split(",") if x]
    bad = [x for x in ids if not is_name(x)]
    if bad or not ids:
        _fail(f"{option} {value!r}: ids are 1-64 characters of A-Z a-z 0-9 . _ - (no '/' or spaces)")
    return ids


def _same_category(model: object, category: str, path: Path) -> None:
    """A model fitted on one category says nothing useful about another: refuse rather than report noise."""
    fitted = getattr(model, "category", "")
    if fitted and fitted != category:
        _fail(
            f"{path} was trained on category {fitted!r}, not {category!r}: pass --category {fitted} or that "
            "category's model"
        )


if __name__ == "__main__":
    main()
