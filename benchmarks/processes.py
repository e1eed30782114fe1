"""The model alone in several processes at once: how to split a host's cores between workers.

    python benchmarks/processes.py --model out/models/puck.pt --configs 1x1,2x1,1x4,4x4,1x16 --json out/processes.json

Each configuration ``KxT`` starts K processes that load the model with T intra-op threads
(``DUOSCAN_TORCH_THREADS=T``, the rest of the compute settings as a worker has them), warm up, wait
for each other at a barrier, then score the same kind of synthetic frames in batches of ``--batch``.
It reports the frames/s of the K processes together (each process's median of ``--repeats`` passes)
and the CPU ms per frame. No broker, no Redis: this is the ceiling that K workers of T threads could
reach on this host, to compare with ``benchmarks/pipeline.py``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class FromWire:
    """A model that scores wire bytes: each batch is decoded first, so the timing covers decode to maps."""

    def __init__(self, model) -> None:
        self.model = model

    def score(self, raw: list[bytes]):
        from duoscan.schemas import Frame

        return self.model.score([Frame.decode(b) for b in raw])


def score_in_process(args: tuple) -> dict:
    """One process of a configuration: load, warm up, meet the others, time ``repeats`` passes."""
    index, threads, opts, barrier = args
    os.environ["DUOSCAN_TORCH_THREADS"] = str(threads)
    from benchmarks.timing import Speed, timed_passes
    from duoscan.cli import apply_compute_settings
    from duoscan.core.config import Settings
    from duoscan.models import load_model, resolve_device
    from duoscan.producers.replay import synthetic_frames
    from duoscan.schemas import Frame

    settings = Settings.load()
    apply_compute_settings(settings)
    device = resolve_device(opts["device"] or settings.device)
    gens = [
        synthetic_frames(
            "B", f"S{s}", categories=(opts["category"],), seed=100 * index + s, defect_rate=0.2, size=opts["size"]
        )
        for s in range(8)
    ]
    wire = [next(gens[i % 8]).encode() for i in range(opts["frames"])]
    model = load_model(opts["model"], device)
    if opts.get("wire"):  # decoding is part of each timed pass: wire bytes to maps
        frames, model = wire, FromWire(model)
    else:
        frames = [Frame.decode(b) for b in wire]  # as a worker gets them: off the wire
    speed = Speed.median(timed_passes(model, frames, opts["batch"], opts["repeats"], device, ready=barrier.wait))
    return {"fps": speed.fps, "cpu_ms_per_frame": speed.cpu_ms, "steal_pct": speed.steal_pct, "device": device}


def run_config(processes: int, threads: int, opts: dict) -> dict:
    ctx = mp.get_context("spawn")  # a fresh interpreter each: no torch or OpenMP state inherited
    with mp.Manager() as manager:
        barrier = manager.Barrier(processes)
        with ctx.Pool(processes) as pool:
            per = pool.map(score_in_process, [(i, threads, opts, barrier) for i in range(processes)])
    return {
        "processes": processes,
        "threads": threads,
        "fps": round(sum(p["fps"] for p in per), 2),
        "fps_per_process": [round(p["fps"], 2) for p in per],
        "cpu_ms_per_frame": round(statistics.mean(p["cpu_ms_per_frame"] for p in per), 1),
        "steal_pct": round(statistics.mean(p["steal_pct"] for p in per), 1),
        "device": per[0]["device"],
    }  # the host's: the processes overlap


def parse_configs(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        k, _, t = item.strip().partition("x")
        if not (k.isdigit() and t.isdigit() and int(k) > 0 and int(t) > 0):
            raise argparse.ArgumentTypeError(f"config {item!r} is not PROCESSESxTHREADS, e.g. 2x4")
        out.append((int(k), int(t)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="a trained model file")
    ap.add_argument("--category", default="puck", help="synthetic category to score (the model's)")
    ap.add_argument("--size", type=int, default=224, help="frame side in pixels")
    ap.add_argument(
        "--configs",
        type=parse_configs,
        default=parse_configs(f"1x1,2x1,1x{os.cpu_count()}"),
        help="PROCESSESxTHREADS,... (default: 1x1,2x1,1x<cores>)",
    )
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--frames", type=int, default=64, help="frames per timed pass")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="", help="auto | cpu | cuda (default: DUOSCAN_DEVICE)")
    ap.add_argument("--json", type=Path, default=Path("out/processes.json"))
    args = ap.parse_args()
    opts = {
        "model": str(args.model),
        "category": args.category,
        "size": args.size,
        "batch": args.batch,
        "frames": args.frames,
        "repeats": args.repeats,
        "device": args.device,
    }
    rows = []
    base = None
    for k, t in args.configs:
        row = run_config(k, t, opts)
        base = base or row["fps"]
        row["vs_first"] = round(row["fps"] / base, 2)
        rows.append(row)
        print(
            f"{k:2d} process(es) x {t:2d} thread(s) on {row['device']}: {row['fps']:7.1f} frames/s in all "
            f"({', '.join(f'{f:.1f}' for f in row['fps_per_process'])}), "
            f"{row['vs_first']:.2f}x the first, CPU {row['cpu_ms_per_frame']:.0f} ms/frame",
            flush=True,
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "model": str(args.model),
                "size": args.size,
                "batch": args.batch,
                "cores": os.cpu_count(),
                "configs": rows,
            },
            indent=2,
        )
    )
    print(f"saved {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
