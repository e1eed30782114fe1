"""Reliability drill at full size: SIGKILL a worker, stop Redis, mix in hostile frames.

    python benchmarks/reliability.py --json out/reliability.json

Starts an embedded broker and a persistent embedded Redis, trains small baseline models,
runs ``--workers`` ``duoscan work`` processes, publishes ``--frames`` valid frames and
``--malformed`` hostile ones at ``--rate`` frames/s, SIGKILLs one worker mid-stream, stops
Redis for ``--redis-outage`` seconds, then counts results, alerts and dead letters.
Goal: lost == 0, duplicate_alerts == 0, every malformed frame in the DLQ (duplicates only where a dead
worker's claim was re-sent).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
from dataclasses import fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from duoscan.drill import DrillConfig, run_drill  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = DrillConfig()
    ap.add_argument("--frames", type=int, default=defaults.frames)
    ap.add_argument("--malformed", type=int, default=defaults.malformed)
    ap.add_argument("--workers", type=int, default=defaults.workers)
    ap.add_argument("--redis-outage", type=float, default=defaults.redis_outage_s, help="seconds Redis stays down")
    ap.add_argument("--rate", type=float, default=defaults.rate_fps, help="publish rate, frames/s")
    ap.add_argument("--seed", type=int, default=defaults.seed)
    ap.add_argument("--workdir", type=Path, default=None, help="logs, Redis data and models (default: a temp folder)")
    ap.add_argument("--json", type=Path, default=Path("out/reliability.json"))
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: stop the broker, Redis, workers
    cfg = DrillConfig(
        frames=args.frames,
        malformed=args.malformed,
        workers=args.workers,
        redis_outage_s=args.redis_outage,
        rate_fps=args.rate,
        seed=args.seed,
    )
    with tempfile.TemporaryDirectory(prefix="duoscan-drill-") as tmp:
        report = run_drill(cfg, args.workdir or Path(tmp))
    out = {"config": {f.name: getattr(cfg, f.name) for f in fields(cfg)}, **report.to_dict()}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2))
    print()
    for key in (
        "frames_sent",
        "results_in_redis",
        "lost",
        "duplicate_results",
        "redelivered_results",
        "anomalous_results",
        "alerts_published",
        "duplicate_alerts",
        "missing_alerts",
        "unconfirmed_alerts",
        "malformed_sent",
        "dlq_messages",
        "dlq_unique",
        "dlq_duplicates",
        "dlq_resent",
        "worker_crashes_survived",
        "redis_outages_survived",
        "redis_retry_log_lines",
        "final_lag",
        "seconds_to_all_results",
        "wall_s",
        "goal_met",
    ):
        print(f"{key:24s} {out[key]}")
    print(f"\nsaved {args.json}")
    return 0 if report.goal_met else 1


if __name__ == "__main__":
    raise SystemExit(main())
