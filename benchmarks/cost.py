"""CPU cost per frame of each seed method's default configuration against its pretrained backbone's own cost.

    python benchmarks/cost.py --json out/cost.json [--methods mafr,cmdr,bridgenet] [--size 224] \
        [--resolutions 224,320,448]

Each method is trained briefly on synthetic parts and then scores frames decoded off the wire, in batches of the
workers' size, on one executor thread with one intra-op thread (one one-thread worker). Per method, measured in
the same passes, so the host's speed cancels:
  model_cpu_ms_per_frame     the process's CPU time per frame for ``score`` (preprocessing, features, networks, maps)
  backbone_cpu_ms_per_frame  the part of it spent inside the pretrained networks' passes
  model_over_backbone        their ratio (goal: at most 2)
Medians over ``--repeats`` passes. Training cost is not measured (short epochs: speed does not depend on them).
``--resolutions``: one row per method and model resolution (grid and smoothing follow it), frames of
``--size`` px; 1000 / model_cpu_ms_per_frame is then a one-core worker's frames per second at that setting.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.timing import timed_passes  # noqa: E402
from duoscan.cli import apply_compute_settings  # noqa: E402
from duoscan.core.config import Settings  # noqa: E402
from duoscan.schemas import Frame  # noqa: E402

SEEDS = ("mafr", "cmdr", "bridgenet")


def trained(method: str, size: int, workdir: Path, resolution: int | None = None, category: str = "puck"):
    from duoscan.models import create
    from duoscan.producers.dataset import iter_samples, write_synthetic_dataset

    data = workdir / f"data{size}"
    if not data.exists():
        write_synthetic_dataset(data, (category,), size, 10, 4, 2, 1, progress=False)
    short = {"patchcore": {}, "btf": {}, "baseline": {}}.get(method, {"epochs": 2})
    options = {**short, **({"resolution": resolution} if resolution else {})}
    return create(method, **options).fit(list(iter_samples(data, category, "train")), progress=False)


def wire_frames(size: int, n: int) -> list[Frame]:
    from duoscan.producers.replay import synthetic_frames

    gen = synthetic_frames("B", "S1", categories=("puck",), seed=3, size=size)
    return [Frame.decode(next(gen).encode()) for _ in range(n)]


def measure(method: str, args: argparse.Namespace, workdir: Path, resolution: int | None = None) -> dict:
    model = trained(method, args.size, workdir, resolution)
    runs = timed_passes(model, wire_frames(args.size, args.frames), args.batch, args.repeats)
    model_ms = statistics.median(r.cpu_ms for r in runs)
    backbone_ms = statistics.median(r.backbone_cpu_ms for r in runs)
    return {
        "method": method,
        "resolution": model.config().get("resolution"),
        "config": model.config(),
        "model_cpu_ms_per_frame": round(model_ms, 1),
        "backbone_cpu_ms_per_frame": None if math.isnan(backbone_ms) else round(backbone_ms, 1),
        "model_over_backbone": None if math.isnan(backbone_ms) else round(model_ms / backbone_ms, 2),
        "model_cpu_ms_runs": [round(r.cpu_ms, 1) for r in runs],
        "steal_pct": [r.steal_pct for r in runs],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default=",".join(SEEDS), help="comma-separated registered methods")
    ap.add_argument("--size", type=int, default=224, help="frame side in pixels")
    ap.add_argument("--resolutions", default="", help="comma-separated model resolutions (default: each default)")
    ap.add_argument("--batch", type=int, default=None, help="frames per score call (default: the workers' max)")
    ap.add_argument("--frames", type=int, default=32, help="frames per timed pass")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=Path("out/cost.json"))
    args = ap.parse_args(argv)
    settings = Settings.load(torch_threads=1)
    apply_compute_settings(settings)
    args.batch = args.batch or settings.max_batch
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        resolutions = [int(r) for r in args.resolutions.split(",") if r] or [None]
        for method in args.methods.split(","):
            for resolution in resolutions:
                rows.append(measure(method, args, Path(tmp), resolution))
                r = rows[-1]
                print(
                    f"{method:10s} at {r['resolution']} px: model {r['model_cpu_ms_per_frame']:6.1f} CPU ms/frame, "
                    f"backbone {r['backbone_cpu_ms_per_frame']}, ratio {r['model_over_backbone']}",
                    flush=True,
                )
    out = {"size": args.size, "batch": args.batch, "torch_threads": torch.get_num_threads(), "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2))
    print(f"saved {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
