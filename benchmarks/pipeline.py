"""The pipeline against the model's own speed: does the stream keep the model busy?

    python benchmarks/pipeline.py --json out/pipeline.json [--method cmdr] [--size 224|400|800]

One run measures, on the embedded broker and a real Redis, with ``duoscan work`` processes:
  model_fps      the model alone scoring pre-decoded batches in-process (the workers' batch size)
  pipeline_fps   sustained producer -> Kafka -> worker -> Redis throughput with the same model
  ratio          pipeline_fps / model_fps, the median over --rounds rounds that alternate the two
                 (model, stream, model, stream, ...; each stream against the mean of the model runs
                 either side of it): this shared machine's speed drifts by 10-20 % over minutes
  cpu_ratio      the model alone's CPU time per frame / the whole pipeline's (worker, broker, Redis and
                 this script), median over the same rounds: what the stream adds, in a unit that other
                 tenants of the host move less than frames/s
  model_cpu_share  the CPU time of the worker's model threads (frames, score, onnx) / the whole pipeline's,
                 within each stream, median over the rounds: both parts are measured over the same seconds,
                 so the host's speed cancels out; what a CPU-bound pipeline on shared cores can reach
  model_cpu_ms_per_frame / backbone_cpu_ms_per_frame / pipeline_cpu_ms_per_frame
                 CPU time per frame of the model alone, of the pretrained networks' passes inside it, and of the
                 whole pipeline (one worker of --threads intra-op threads, broker, Redis, this script as the
                 producer), medians over the rounds, with model_over_backbone and pipeline_over_model
  p50_ms/p99_ms  publish -> result-written latency at ~70 % of the sustained throughput (or of the model
                 alone's speed, if that is lower)
  batch_sweep    throughput and p50/p99 latency for max batch 1, 2, 4, 8, 16
  wire           bytes per frame for each wire option and the I-AUROC change it causes
  scaling        throughput with 1 and 2 workers (one intra-op thread each), each against the model alone in
                 as many processes of one thread (benchmarks/processes.py; its 2/1 speedup says whether 2 cores
                 were free), and the cores present
It prints a table, saves JSON and a PNG plot (throughput and latency against batch size).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import psutil  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from benchmarks.processes import run_config as processes_speed  # noqa: E402
from benchmarks.timing import Speed, between, host_cpu, steal_pct, timed_passes  # noqa: E402
from duoscan.cli import apply_compute_settings  # noqa: E402
from duoscan.core import kafka_clients  # noqa: E402
from duoscan.core.config import Settings  # noqa: E402
from duoscan.embedded import EmbeddedBroker, EmbeddedRedis  # noqa: E402
from duoscan.models import resolve_device  # noqa: E402
from duoscan.schemas import Frame  # noqa: E402
from duoscan.stack import spawn_worker, stop_workers, wait_for_assignment, wait_until, worker_ids  # noqa: E402

console = Console()
PARTITIONS = 4  # per benchmark topic: up to 4 workers can share it
WIRE_OPTIONS = [
    ("raw float32", "none", False),
    ("zstd", "zstd", False),
    ("lz4", "lz4", False),
    ("zstd-delta", "zstd-delta", False),
    ("lz4-delta", "lz4-delta", False),
    ("zstd-delta + float16 xyz", "zstd-delta", True),
    ("zstd + float16 xyz", "zstd", True),
]


def train_model(method: str, category: str, size: int, workdir: Path) -> tuple[Path, Path]:
    from duoscan.models import create
    from duoscan.producers.dataset import iter_samples, write_synthetic_dataset

    data = write_synthetic_dataset(
        workdir / "data",
        categories=(category,),
        size=size,
        n_train=24,
        n_validation=10,
        n_test_good=8,
        n_test_per_defect=3,
        progress=False,
    )
    model = create(method).fit(list(iter_samples(data, category, "train")), progress=True)
    model.calibrate(iter_samples(data, category, "validation"))
    out = workdir / "models"
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / f"{category}.pt")
    return out / f"{category}.pt", data


def balanced_stations(line: str, n: int, partitions: int) -> list[str]:
    """``n`` station names whose keys the producer's default partitioner spreads evenly over
    ``partitions`` (``duoscan stations`` shows any names' spread). Stations S0..S7 of line B hash 3/1/2/2 onto 4
    partitions, which capped 2 workers at 1.6x one worker however many cores were free."""
    per, count, names = -(-n // partitions), [0] * partitions, []
    for i in itertools.count():
        p = kafka_clients.partition_for(Frame.key_for(line, f"S{i}"), partitions)
        if count[p] < per:
            count[p] += 1
            names.append(f"S{i}")
            if len(names) == n:
                return names
    raise AssertionError("unreachable")


def stream_frames(category: str, size: int, n: int, seed: int, partitions: int = PARTITIONS) -> list[Frame]:
    """``n`` synthetic frames from 8 stations of line B, two per partition, taken round robin."""
    from duoscan.producers.replay import synthetic_frames

    gens = [
        synthetic_frames("B", name, categories=(category,), seed=seed * 10 + s, defect_rate=0.2, size=size)
        for s, name in enumerate(balanced_stations("B", 8, partitions))
    ]
    return [next(gens[i % 8]) for i in range(n)]


def cpu_seconds(pids: list[int], children: bool = False) -> float:
    """User + system CPU seconds of these processes (and, with ``children``, their descendants) so far."""
    total = 0.0
    for pid in pids:
        proc = psutil.Process(pid)
        for p in [proc, *(proc.children(recursive=True) if children else [])]:
            t = p.cpu_times()
            total += t.user + t.system
    return total


def thread_cpu_seconds(pids: list[int]) -> dict[str, float]:
    """CPU seconds so far of these processes' live threads, summed by OS thread name (Linux ``/proc``;
    empty elsewhere). Workers name their stage threads (decode, score, deliver, frames); threads a
    stage starts (OpenMP, onnxruntime) carry its name, the rest keep the process's."""
    tick = os.sysconf("SC_CLK_TCK")
    by_name: dict[str, float] = {}
    for pid in pids:
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                stat = (task / "stat").read_text()
            except OSError:  # the thread ended
                continue
            name, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
            by_name[name] = by_name.get(name, 0.0) + (int(rest[11]) + int(rest[12])) / tick  # utime + stime
    return by_name


def model_speed(model_path: Path, frames: list[Frame], batch: int, device: str, repeats: int = 3) -> Speed:
    from duoscan.models import load_model

    model = load_model(model_path, device)
    frames = [Frame.decode(f.encode()) for f in frames]  # what a worker scores: frames off the wire
    return Speed.median(timed_passes(model, frames, batch, repeats, device))


def wire_table(model_path: Path, data: Path, category: str, device: str) -> list[dict]:
    from duoscan.models import load_model
    from duoscan.models.metrics import image_auroc
    from duoscan.producers.dataset import iter_samples

    model = load_model(model_path, device)
    samples = list(iter_samples(data, category, "test"))
    labels = [int(s.mask.any()) for s in samples]
    frames = [Frame(line="B", station="S1", category=category, rgb=s.rgb, xyz=s.xyz) for s in samples]
    base = image_auroc(labels, model.score(frames).image_scores)
    rows = []
    for name, codec, f16 in WIRE_OPTIONS:
        payloads = [f.encode(codec=codec, xyz_float16=f16) for f in frames]  # type: ignore[arg-type]
        t0 = time.perf_counter()
        back = [Frame.decode(p) for p in payloads]
        dec_ms = (time.perf_counter() - t0) / len(payloads) * 1000
        t0 = time.perf_counter()
        for f in frames[:8]:
            f.encode(codec=codec, xyz_float16=f16)  # type: ignore[arg-type]
        enc_ms = (time.perf_counter() - t0) / 8 * 1000
        lossless = all(
            np.array_equal(a.xyz, b.xyz) and np.array_equal(a.rgb, b.rgb) for a, b in zip(frames, back, strict=True)
        )
        auroc = base if lossless else image_auroc(labels, model.score(back).image_scores)
        rows.append(
            {
                "option": name,
                "codec": codec,
                "xyz_float16": f16,
                "bytes_per_frame": int(np.mean([len(p) for p in payloads])),
                "lossless": lossless,
                "encode_ms": round(enc_ms, 2),
                "decode_ms": round(dec_ms, 2),
                "i_auroc": round(auroc, 4),
                "i_auroc_change": round(auroc - base, 4),
            }
        )
    raw = rows[0]["bytes_per_frame"]
    for r in rows:
        r["vs_raw"] = round(r["bytes_per_frame"] / raw, 3)
    return rows


class Stack:
    """Broker + Redis for the whole run; each configuration gets fresh topics, group and keys."""

    def __init__(self, workdir: Path, models: Path) -> None:
        self.workdir, self.models = workdir, models
        self.broker = EmbeddedBroker(log_path=workdir / "broker.log").start()
        self.redis = EmbeddedRedis(log_path=workdir / "redis.log").start()

    def close(self) -> None:
        self.redis.stop()
        self.broker.stop()

    def settings(self, max_batch: int, threads: int) -> Settings:
        """Fresh topics, group and keys for one configuration (no run reads another's messages)."""
        return Settings.isolated(
            "p" + uuid.uuid4().hex[:6],
            bootstrap_servers=self.broker.bootstrap,
            redis_url=self.redis.url,
            partitions=PARTITIONS,
            max_batch=max_batch,
            torch_threads=threads,
        )

    def run_config(
        self,
        frames_for: callable,
        workers: int,
        max_batch: int,
        threads: int,
        n_sat: int,
        latency_s: float,
        rate_cap: float = float("inf"),
    ) -> dict:
        """One configuration: warm up, saturate (throughput and CPU per frame), then stream at 70 % of that
        throughput (latency)."""
        from duoscan.producers.sdk import FramePublisher

        s = self.settings(max_batch, threads)
        kafka_clients.ensure_topics(s, ["B"])
        procs = [spawn_worker(s, [self.models], self.workdir / f"{s.key_prefix}-w{i}.log") for i in range(workers)]
        run = _Run(s, self, procs)
        try:
            wait_for_assignment(run.store, worker_ids(procs), 4, 180)
            with FramePublisher(s) as pub:
                run.publish(pub, frames_for(max(2 * max_batch, 8) * workers), "warm-up results")  # model load etc.
                row = run.saturate(pub, frames_for(n_sat))
                rate = 0.7 * min(row["fps"], rate_cap)  # capped by the model alone: no lucky sample into overload
                ms = run.latency(pub, frames_for(max(20, int(latency_s * rate))) if latency_s > 0 else [], rate)
            return {
                "workers": workers,
                "max_batch": max_batch,
                "threads_per_worker": threads,
                **row,
                "latency_rate_fps": round(rate, 2),
                "p50_ms": round(float(np.percentile(ms, 50)), 1),
                "p99_ms": round(float(np.percentile(ms, 99)), 1),
            }
        finally:
            stop_workers(procs)


class _Run:
    """One configuration's stream: publish, wait for the results, measure."""

    def __init__(self, settings: Settings, stack: Stack, procs: list) -> None:
        from duoscan.workers.store import ResultStore

        self.s, self.procs, self.expected = settings, procs, 0
        self.store = ResultStore(settings)
        self.pids = {
            "workers": [p.pid for p in procs],
            "broker": [stack.broker.pid],
            "redis": [stack.redis.pid],
            "benchmark": [os.getpid()],
        }

    def wait_written(self, n: int, what: str) -> None:
        # one XLEN per poll (the line's stream gets one entry per new frame): reading every result while waiting
        # would steal CPU from the worker being measured (throughput comes from the results' own write stamps)
        wait_until(lambda: self.store.client.xlen(self.store.stream_key("B")) >= n, 600, what, interval=0.25)

    def publish(self, pub, frames: list[Frame], what: str) -> None:
        for f in frames:
            pub.publish_frame(f)
        pub.flush()
        self.expected += len(frames)
        self.wait_written(self.expected, what)

    def cpu(self) -> dict[str, float]:
        return {k: cpu_seconds(v, children=k != "benchmark") for k, v in self.pids.items()}  # children: the others

    def saturate(self, pub, sat: list[Frame]) -> dict:
        """Everything published up front, pre-encoded (the producer is not measured): sustained frames/s and CPU
        per frame of every process."""
        payloads = []
        for f in sat:
            f.published_ns = time.time_ns()
            payloads.append(f.encode(codec=self.s.codec, xyz_float16=self.s.xyz_float16))  # type: ignore[arg-type]
        cpu0, threads0, host0 = self.cpu(), thread_cpu_seconds(self.pids["workers"]), host_cpu()
        t0 = time.time_ns()
        sent = [pub.send_raw("B", f.key, p, f.frame_id) for f, p in zip(sat, payloads, strict=True)]
        pub.flush()
        per_partition = [0] * self.s.partitions  # where the broker put them: a worker's share of the load
        for fut in sent:
            per_partition[fut.get().partition] += 1
        self.expected += len(sat)
        self.wait_written(self.expected, "saturation results")
        steal = steal_pct(host0)
        cpu1 = self.cpu()
        cpu_ms = {k: round((cpu1[k] - cpu0[k]) / len(sat) * 1000, 1) for k in cpu1}
        cpu_ms["total"] = round(sum(cpu_ms.values()), 1)
        threads1 = thread_cpu_seconds(self.pids["workers"])
        thread_ms = {
            k: round((v - threads0.get(k, 0.0)) / len(sat) * 1000, 1)
            for k, v in sorted(threads1.items(), key=lambda kv: -kv[1])
        }
        written = sorted(r.timings.written_ns for r in self.store.read_results([f.frame_id for f in sat]).values())
        # sustained: frames written after the first batch landed, over the time since it landed
        # (the fill at the start and the publish time are not the worker's throughput)
        later = [w for w in written if w > written[0]]
        fps = len(later) / ((written[-1] - written[0]) / 1e9) if later else float("nan")
        return {
            "fps": round(fps, 2),
            "end_to_end_fps": round(len(sat) / ((written[-1] - t0) / 1e9), 2),
            "frames": len(sat),
            "frames_per_partition": per_partition,
            "steal_pct": steal,
            "cpu_ms_per_frame": cpu_ms,
            "worker_thread_cpu_ms_per_frame": thread_ms,
        }

    def latency(self, pub, frames: list[Frame], rate: float) -> list[float]:
        """Publish→write ms of ``frames`` sent at ``rate``, encoded and stamped as a sensor would."""
        start = time.perf_counter()
        for i, f in enumerate(frames):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            f.captured_ns = time.time_ns()
            pub.publish_frame(f)
        pub.flush()
        self.expected += len(frames)
        self.wait_written(self.expected, "latency results")
        results = self.store.read_results([f.frame_id for f in frames]).values()
        return [(r.timings.written_ns - r.timings.published_ns) / 1e6 for r in results] or [float("nan")]


MODEL_THREADS = ("frames", "score", "onnx")  # the worker's threads that run the model (see thread_cpu_seconds)


def model_cpu_share(row: dict) -> float:
    """The share of a stream's CPU time (worker, broker, Redis, script) that the worker's model threads used."""
    threads, cpu = row["worker_thread_cpu_ms_per_frame"], row["cpu_ms_per_frame"]
    return round(sum(threads.get(t, 0.0) for t in MODEL_THREADS) / cpu["total"], 3)


def ratio_rounds(
    stack: Stack,
    frames_for: callable,
    model_path: Path,
    bench_frames: list[Frame],
    batch: int,
    n: int,
    n_sat: int,
    device: str,
    threads: int,
) -> list[dict]:
    """Model alone and pipeline alternated ``n`` times at one batch size: one model run between streams."""
    rounds, before = [], None
    for i in range(n):
        row, before, after = between(
            lambda: model_speed(model_path, bench_frames, batch, device),
            lambda: stack.run_config(frames_for, workers=1, max_batch=batch, threads=threads, n_sat=n_sat, latency_s=0),
            before,
        )
        cpu, model_cpu = row["cpu_ms_per_frame"], (before.cpu_ms + after.cpu_ms) / 2
        backbone_cpu = (before.backbone_cpu_ms + after.backbone_cpu_ms) / 2  # NaN: no pretrained network
        backbone = None if math.isnan(backbone_cpu) else round(backbone_cpu, 1)
        (b, a), model = row["model_fps_runs"], row["model_fps"]
        rounds.append(
            {
                "model_fps_before": b,
                "pipeline_fps": row["fps"],
                "model_fps_after": a,
                "model_fps": model,
                "ratio": row["ratio"],
                "model_cpu_ms_per_frame": round(model_cpu, 1),
                "backbone_cpu_ms_per_frame": backbone,
                "pipeline_cpu_ms_per_frame": cpu,
                "cpu_ratio": round(model_cpu / cpu["total"], 3),
                "model_over_backbone": round(model_cpu / backbone_cpu, 3) if backbone else None,
                "pipeline_over_model": round(cpu["total"] / model_cpu, 3),
                "model_cpu_share": model_cpu_share(row),
                "steal_pct": {
                    "model_before": before.steal_pct,
                    "pipeline": row["steal_pct"],
                    "model_after": after.steal_pct,
                },
                "worker_thread_cpu_ms_per_frame": row["worker_thread_cpu_ms_per_frame"],
            }
        )
        console.print(
            f"ratio round {i + 1}/{n}: model {b:.1f} -> {a:.1f}, pipeline {row['fps']:.1f} frames/s, ratio "
            f"{row['ratio']:.2f}; "
            f"CPU per frame: model {model_cpu:.0f} ms, pipeline {cpu['total']:.0f} ms (worker "
            f"{cpu['workers']:.0f}, its model threads "
            f"{rounds[-1]['model_cpu_share']:.0%} of the pipeline's); "
            f"host steal {before.steal_pct:.0f} / {row['steal_pct']:.0f} / {after.steal_pct:.0f} %"
        )
        before = after
    return rounds


def scaling_run(stack: Stack, frames_for: callable, workers: int, batch: int, n_sat: int, alone: dict) -> dict:
    """``workers`` workers of one intra-op thread each, against the model alone in as many processes of one
    thread (``benchmarks/processes.py``), measured right before and right after the stream. The model alone
    says what the cores allow: 2 processes at ~2x one means the 2 cores were free for them."""

    def model_alone() -> Speed:
        d = processes_speed(workers, 1, alone)
        return Speed(d["fps"], d["cpu_ms_per_frame"], d["steal_pct"])

    row, before, after = between(
        model_alone,
        lambda: stack.run_config(frames_for, workers=workers, max_batch=batch, threads=1, n_sat=n_sat, latency_s=4),
    )
    console.print(
        f"{workers} worker(s) x 1 thread: {row['fps']:.1f} frames/s; the model alone in {workers} process(es) x 1 "
        f"thread {before.fps:.1f} -> {after.fps:.1f}, ratio {row['ratio']:.2f}"
    )
    return row


def median_by_thread(rounds: list[dict]) -> dict[str, float]:
    """Each worker thread name's median CPU ms per frame over the rounds (0 in a round it did not run), largest
    first."""
    names = {n for r in rounds for n in r["worker_thread_cpu_ms_per_frame"]}
    med = {
        n: round(statistics.median(r["worker_thread_cpu_ms_per_frame"].get(n, 0.0) for r in rounds), 1) for n in names
    }
    return dict(sorted(med.items(), key=lambda kv: -kv[1]))


def plot(sweep: list[dict], model_fps_by_batch: dict[int, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b = [r["max_batch"] for r in sweep]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(b, [r["fps"] for r in sweep], "o-", label="pipeline frames/s")
    ax.plot(b, [model_fps_by_batch[x] for x in b], "s--", label="model alone frames/s")
    ax.set_xscale("log", base=2)
    ax.set_xticks(b, [str(x) for x in b])
    ax.set_xlabel("max batch")
    ax.set_ylabel("frames/s")
    ax2 = ax.twinx()
    ax2.plot(b, [r["p99_ms"] for r in sweep], "^:", color="tab:red", label="p99 latency at 70 % load")
    ax2.plot(b, [r["p50_ms"] for r in sweep], "v:", color="tab:orange", label="p50 latency at 70 % load")
    ax2.set_ylabel("ms")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper left", fontsize=8)
    ax.set_title("duoscan pipeline: throughput and latency vs micro-batch size")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--method", default="cmdr", help="method to train and serve (default: cmdr, the fastest of the good ones here)"
    )
    ap.add_argument("--size", type=int, default=224, choices=(224, 400, 800), help="frame side in pixels")
    ap.add_argument("--category", default="puck")
    ap.add_argument("--model", type=Path, default=None, help="a trained model file for --category (skips training)")
    ap.add_argument("--data", type=Path, default=None, help="dataset with --category's test split (with --model)")
    ap.add_argument("--batches", default="1,2,4,8,16")
    ap.add_argument("--frames", type=int, default=160, help="frames per saturation run")
    ap.add_argument("--latency-seconds", type=float, default=12.0)
    ap.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="alternating model / stream rounds for the ratio at the workers' batch size",
    )
    ap.add_argument(
        "--threads", type=int, default=1, help="intra-op threads of the worker and of the model alone (0: all cores)"
    )
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=Path("out/pipeline.json"))
    return ap.parse_args()


def served_model(args: argparse.Namespace, workdir: Path) -> tuple[Path, Path | None]:
    """The model file workers serve (named after the category: workers route by file name) and its dataset."""
    if args.model:
        model_path, data = args.model, args.data
    else:
        console.print(f"training {args.method} on synthetic {args.category} at {args.size} px")
        model_path, data = train_model(args.method, args.category, args.size, workdir)
    if model_path.name != f"{args.category}.pt":
        (workdir / "models").mkdir(parents=True, exist_ok=True)
        target = workdir / "models" / f"{args.category}.pt"
        target.write_bytes(model_path.read_bytes())
        model_path = target
    return model_path, data


def measure(args: argparse.Namespace, model_path: Path, device: str, batch: int, workdir: Path) -> dict:
    """Model alone and pipeline: the batch sweep, the alternating ratio rounds, one and two workers."""
    seed = itertools.count(1)
    frames_for = lambda n: stream_frames(args.category, args.size, n, next(seed))  # noqa: E731
    bench_frames = frames_for(32)
    batches = [int(b) for b in args.batches.split(",")]
    first = {b: model_speed(model_path, bench_frames, b, device) for b in batches}
    model_fps_by_batch = {b: round(first[b].fps, 2) for b in batches}
    console.print(f"model alone, before streaming: {model_fps_by_batch} frames/s")
    stack = Stack(workdir, model_path)
    try:
        sweep = []
        for b in batches:
            row, _, _ = between(
                lambda b=b: model_speed(model_path, bench_frames, b, device),
                lambda b=b: stack.run_config(
                    frames_for, 1, b, args.threads, args.frames, args.latency_seconds, rate_cap=first[b].fps
                ),
                first[b],
            )
            model_fps_by_batch[b] = row["model_fps"]
            sweep.append(row)
            console.print(
                f"batch {b:2d}: {row['fps']:.1f} frames/s, p50 {row['p50_ms']:.0f} ms, p99 {row['p99_ms']:.0f} ms "
                f"at {row['latency_rate_fps']:.1f} frames/s"
            )
        main_row = next((r for r in sweep if r["max_batch"] == batch), None) or stack.run_config(
            frames_for, 1, batch, args.threads, args.frames, args.latency_seconds
        )
        rounds = ratio_rounds(
            stack, frames_for, model_path, bench_frames, batch, args.rounds, args.frames, device, args.threads
        )
        alone = dict(model=str(model_path), category=args.category, size=args.size, batch=batch, frames=32, repeats=3)
        one, two = (scaling_run(stack, frames_for, k, batch, args.frames, {**alone, "device": ""}) for k in (1, 2))
    finally:
        stack.close()
    return dict(sweep=sweep, main_row=main_row, rounds=rounds, one=one, two=two, model_fps_by_batch=model_fps_by_batch)


def report(args: argparse.Namespace, settings: Settings, device: str, m: dict, wire: list[dict]) -> dict:
    """The benchmark JSON: medians over the rounds, the sweep, wire options and scaling."""
    rounds, main_row, one, two = m["rounds"], m["main_row"], m["one"], m["two"]
    med = lambda key: round(statistics.median(r[key] for r in rounds), 3)  # noqa: E731
    model_fps = round(statistics.median(r["model_fps"] for r in rounds), 2)
    batch_ms = settings.max_batch / model_fps * 1000
    return {
        "method": args.method,
        "size": args.size,
        "category": args.category,
        "max_batch": settings.max_batch,
        "codec": settings.codec,
        "device": device,
        "backbone_runtime": settings.backbone_runtime,
        "blas_threads": settings.blas_threads,
        "cores": os.cpu_count(),
        "model_fps": model_fps,
        "model_fps_by_batch": m["model_fps_by_batch"],
        "pipeline_fps": round(statistics.median(r["pipeline_fps"] for r in rounds), 2),
        "threads_per_worker": args.threads,
        "ratio": med("ratio"),
        "model_cpu_ms_per_frame": med("model_cpu_ms_per_frame"),
        "backbone_cpu_ms_per_frame": med("backbone_cpu_ms_per_frame")
        if rounds[0]["backbone_cpu_ms_per_frame"]
        else None,
        "pipeline_cpu_ms_per_frame": round(
            statistics.median(r["pipeline_cpu_ms_per_frame"]["total"] for r in rounds), 1
        ),
        "model_over_backbone": med("model_over_backbone") if rounds[0]["model_over_backbone"] else None,
        "pipeline_over_model": med("pipeline_over_model"),
        "ratio_rounds": rounds,
        "cpu_ratio": med("cpu_ratio"),
        "model_cpu_share": med("model_cpu_share"),
        "worker_thread_cpu_ms_per_frame": median_by_thread(rounds),
        "p50_ms": main_row["p50_ms"],
        "p99_ms": main_row["p99_ms"],
        "batch_scoring_ms": round(batch_ms, 1),
        "p99_over_batch_scoring": round(main_row["p99_ms"] / batch_ms, 2),
        "batch_sweep": m["sweep"],
        "wire": wire,
        "scaling": {
            "cores": os.cpu_count(),
            "one_worker": one,
            "two_workers": two,
            "speedup": round(two["fps"] / one["fps"], 2),
            "model_speedup": round(two["model_fps"] / one["model_fps"], 2),
        },
    }


def print_report(out: dict) -> None:
    t = Table(
        title=f"{out['method']} at {out['size']} px, batch {out['max_batch']}, on {out['device']}, {out['cores']} cores"
    )
    for col in ("max batch", "model fps", "pipeline fps", "ratio", "p50 ms", "p99 ms"):
        t.add_column(col, justify="right")
    for r in out["batch_sweep"]:
        ratio = r["fps"] / r["model_fps"]
        t.add_row(
            *map(str, (r["max_batch"], f"{r['model_fps']:.1f}", f"{r['fps']:.1f}", f"{ratio:.2f}")),
            f"{r['p50_ms']:.0f}",
            f"{r['p99_ms']:.0f}",
        )
    console.print(t)
    if out["wire"]:
        w = Table(title="wire options")
        for col in ("option", "bytes/frame", "vs raw", "lossless", "enc ms", "dec ms", "I-AUROC change"):
            w.add_column(col, justify="right")
        for r in out["wire"]:
            w.add_row(
                r["option"],
                f"{r['bytes_per_frame']:,}",
                f"{r['vs_raw']:.3f}",
                str(r["lossless"]),
                f"{r['encode_ms']:.1f}",
                f"{r['decode_ms']:.1f}",
                f"{r['i_auroc_change']:+.4f}",
            )
        console.print(w)
    if threads := out["worker_thread_cpu_ms_per_frame"]:
        by_thread = ", ".join(f"{k} {v:.1f}" for k, v in threads.items())
        console.print(f"worker CPU ms per frame by thread (median of the rounds): {by_thread}")
    sc, rounds = out["scaling"], out["ratio_rounds"]
    backbone = (
        f"backbone {out['backbone_cpu_ms_per_frame']}, model {out['model_cpu_ms_per_frame']} "
        f"({out['model_over_backbone']}x the backbone)"
        if out["backbone_cpu_ms_per_frame"]
        else f"model {out['model_cpu_ms_per_frame']} (no pretrained network)"
    )
    console.print(
        f"CPU ms per frame with {out['threads_per_worker']} thread(s): {backbone}, pipeline "
        f"{out['pipeline_cpu_ms_per_frame']} ({out['pipeline_over_model']}x the model)"
    )
    console.print(
        f"ratio {out['ratio']} (median of {[r['ratio'] for r in rounds]}); the model threads' share of the "
        f"pipeline's CPU {out['model_cpu_share']} (median of {[r['model_cpu_share'] for r in rounds]}) | "
        f"p99 {out['p99_ms']} ms = {out['p99_over_batch_scoring']}x one batch's scoring "
        f"({out['batch_scoring_ms']:.0f} ms) | 2 workers / 1 worker (1 thread each) {sc['speedup']}x on "
        f"{out['cores']} cores, the model alone in 2 / 1 processes {sc['model_speedup']}x; ratio with 1 and 2 "
        f"workers of 1 thread {sc['one_worker']['ratio']} and {sc['two_workers']['ratio']}"
    )


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: stop the broker, Redis, workers
    settings = Settings.load(torch_threads=args.threads)
    apply_compute_settings(settings)  # the model alone runs with the threads and runtime the workers have
    device = resolve_device(settings.device)  # and on the device they score on
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="duoscan-pipeline-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        model_path, data = served_model(args, workdir)
        wire = wire_table(model_path, data, args.category, device) if data else []
        measured = measure(args, model_path, device, settings.max_batch, workdir)
    out = {**report(args, settings, device, measured, wire), "wall_s": round(time.monotonic() - t_start, 1)}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2))
    png = args.json.with_suffix(".png")
    plot(out["batch_sweep"], out["model_fps_by_batch"], png)
    print_report(out)
    console.print(f"saved {args.json} and {png} in {out['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
