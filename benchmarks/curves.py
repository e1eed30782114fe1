"""Training curves of saved models: is the loss flat where training stops?

    python -m benchmarks.curves out/models/bracket-mafr.pt out/models/bracket-cmdr.pt --out docs/loss-curves.png

Every network method keeps its per-epoch mean loss in the model file (``loss_history``). Each curve is drawn
over its own first epoch's loss, so methods with different losses share one axis; the JSON beside the PNG
gives, per model, the relative drop over the last fifth of the epochs (near 0 = flat).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from duoscan.models import load_model  # noqa: E402


def last_fifth_drop(history: list[float]) -> float:
    """(loss at 80 % of training - final loss) / loss at 80 %: how much the last fifth still gained."""
    at = history[int(0.8 * (len(history) - 1))]
    return (at - history[-1]) / abs(at) if at else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path, help="model files of network methods")
    parser.add_argument("--out", type=Path, default=Path("out/loss-curves.png"))
    args = parser.parse_args(argv)
    rows = []
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    for path in args.models:
        model = load_model(path)
        history = getattr(model, "loss_history", [])
        if not history:
            continue
        label = f"{model.name} ({model.category or path.stem})"
        ax.plot(range(1, len(history) + 1), [v / history[0] for v in history], label=label)
        rows.append(
            {
                "model": str(path),
                "method": model.name,
                "epochs": len(history),
                "last_fifth_drop": round(last_fifth_drop(history), 4),
            }
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss / first epoch's")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
