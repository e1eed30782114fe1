"""Workers sharing one GPU: frames/s per GPU and host CPU per frame, from wire bytes to maps.

    python benchmarks/gpu.py --json out/gpu.json [--method cmdr] [--workers 1,2,4] [--batches 8,16,32,64]

For each number of worker processes and each batch size, the processes load the model on the GPU (one
intra-op thread each, as workers do), meet at a barrier, then decode synthetic frames from their wire bytes and
score them (benchmarks/processes.py with decoding in every timed pass). Reported per configuration: frames/s of
all processes together and the host CPU ms per frame. Without a CUDA device it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="cmdr", help="method to train (ignored with --model)")
    ap.add_argument("--model", type=Path, default=None, help="a trained model file for --category")
    ap.add_argument("--category", default="puck")
    ap.add_argument("--size", type=int, default=224, help="frame side in pixels")
    ap.add_argument("--workers", default="1,2,4", help="worker processes sharing the GPU")
    ap.add_argument("--batches", default="8,16,32,64")
    ap.add_argument("--frames", type=int, default=256, help="frames per timed pass, per process")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=Path("out/gpu.json"))
    args = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device on this machine: benchmarks/gpu.py measures workers sharing a GPU; nothing to do")
        return 0
    from benchmarks.processes import run_config

    with tempfile.TemporaryDirectory(prefix="duoscan-gpu-") as tmp:
        model = args.model or train(args.method, args.category, args.size, Path(tmp))
        rows = []
        for workers in (int(w) for w in args.workers.split(",")):
            for batch in (int(b) for b in args.batches.split(",")):
                opts = dict(
                    model=str(model),
                    category=args.category,
                    size=args.size,
                    batch=batch,
                    wire=True,
                    frames=args.frames,
                    repeats=args.repeats,
                    device="cuda",
                )
                row = {"workers": workers, "batch": batch, **run_config(workers, 1, opts)}
                rows.append(row)
                print(
                    f"{workers} worker(s), batch {batch:3d}: {row['fps']:8.1f} frames/s, host CPU "
                    f"{row['cpu_ms_per_frame']:.1f} ms/frame",
                    flush=True,
                )
    out = {"gpu": torch.cuda.get_device_name(0), "cores": os.cpu_count(), "size": args.size, "configs": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2))
    print(f"saved {args.json}")
    return 0


def train(method: str, category: str, size: int, workdir: Path) -> Path:
    from benchmarks.cost import trained

    path = workdir / f"{category}.pt"
    trained(method, size, workdir, category).save(path)
    return path


if __name__ == "__main__":
    sys.exit(main())
