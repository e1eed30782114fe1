"""Scoring throughput of trained models at several batch sizes (model alone, in-process).

    python benchmarks/scoring.py --model out/models/puck-mafr.pt --data data/synthetic --category puck \
        --json out/scoring.json

Frames come from the category's test split and are decoded once up front; features are
computed every time (no cache), as a worker would. Prints a table and saves JSON with the
median of ``--repeats`` timed passes per batch size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import timed_passes  # noqa: E402
from duoscan.cli import apply_compute_settings  # noqa: E402
from duoscan.core.config import Settings  # noqa: E402
from duoscan.models import load_model, resolve_device  # noqa: E402
from duoscan.producers.dataset import iter_dataset  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, nargs="+", required=True, help="model files")
    ap.add_argument("--data", type=Path, default=Path("data/synthetic"))
    ap.add_argument("--category", required=True)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--frames", type=int, default=16, help="frames per timed pass")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", type=Path, default=Path("out/scoring.json"))
    args = ap.parse_args()
    apply_compute_settings(Settings.load())  # threads and backbone runtime as a worker has them
    frames = list(iter_dataset(args.data, args.category, "test"))[: args.frames]
    device = resolve_device(args.device)
    rows = []
    for path in args.model:
        model = load_model(path, device)
        for b in args.batch:
            runs = [r.fps for r in timed_passes(model, frames, b, args.repeats, device)]
            rows.append(
                {
                    "model": str(path),
                    "method": model.name,
                    "config": model.config(),
                    "batch": b,
                    "fps_median": statistics.median(runs),
                    "fps_runs": runs,
                }
            )
            print(
                f"{path.name:32s} batch {b:2d}: {statistics.median(runs):6.1f} frames/s (runs "
                f"{', '.join(f'{r:.1f}' for r in runs)})",
                flush=True,
            )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {"device": device, "threads": torch.get_num_threads(), "frames": len(frames), "results": rows}, indent=2
        )
    )
    print(f"saved {args.json}")


if __name__ == "__main__":
    main()
