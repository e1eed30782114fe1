"""Does BridgeNet's colour branch learn defects, or only the texture family it was trained on?

    python -m benchmarks.textures --data DATA --categories bracket,potato --json out/textures.json

For each texture family of the synthetic-anomaly generator (``procedural``, ``photo``, ``both``) a colour-only
BridgeNet is trained on the category's good frames; it is then tested on the category's good test frames and a
copy of each with a texture of one family pasted on the part (Perlin mask, as in training, but other seeds), and
on the dataset's own test split (its rendered defects). A model that only learned its training family scores the
other family near chance; one that learned "foreign surface" finds both.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from duoscan.evaluate import accuracy, evaluate_model, train_model
from duoscan.models import with_all_inputs
from duoscan.models.preprocess import PreprocessConfig, prepare
from duoscan.models.synthesis import FILLS, UnifiedTextureGenerator
from duoscan.models.visible_depth import part_region
from duoscan.producers.dataset import iter_dataset


def pasted(good: list, fill: str, seed: int = 7) -> list:
    """The good frames, then one copy of each with a ``fill`` texture pasted on its part (mask = where)."""
    rng = np.random.default_rng(seed)
    gen = UnifiedTextureGenerator(donor_share=0.0, fill=fill)
    out = list(good)
    for i, s in enumerate(good):
        h, w = s.rgb.shape[:2]
        p = prepare(s.rgb, s.xyz, PreprocessConfig(resolution=max(h, w)))  # padded to a square, not resized
        (top, left) = p.pad
        region = part_region(p.valid)[top : top + h, left : left + w]
        a = gen(s.rgb, np.zeros((h, w), np.float32), region, rng, target="rgb")
        out.append(dataclasses.replace(s, rgb=a.rgb, mask=a.mask, defect=f"pasted-{fill}", name=f"p{i:03d}"))
    return out


def run(data: Path, category: str, fills: list[str], epochs: int | None, cache: str | None = None) -> list[dict]:
    good = with_all_inputs([s for s in iter_dataset(data, category, "test") if s.label == 0])
    tests = {fill: pasted(good, fill) for fill in ("procedural", "photo")}
    rows = []
    for fill in fills:
        extra = {"epochs": epochs} if epochs else {}
        model = train_model(
            data, category, "bridgenet", "rgb", "cpu", progress=False, cache_dir=cache, fill=fill, **extra
        )
        row = {"category": category, "trained_on": fill}
        for family, samples in tests.items():
            out = model.score(samples)
            acc = accuracy(samples, [float(v) for v in out.image_scores], out.pixel_maps)
            row[f"{family}_i_auroc"], row[f"{family}_aupro_30"] = acc["i_auroc"], acc["aupro_30"]
        rep = evaluate_model(model, data, category, progress=False)
        row["dataset_i_auroc"], row["dataset_aupro_30"] = rep["i_auroc"], rep["aupro_30"]
        rows.append(row)
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="MVTec 3D-AD-layout dataset (e.g. duoscan synth)")
    parser.add_argument("--categories", default="bracket,potato")
    parser.add_argument("--fills", default=",".join(FILLS), help="texture families to train on")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the method's)")
    parser.add_argument("--cache", default=None, help="feature cache folder (the good frames' features)")
    parser.add_argument("--json", type=Path, default=Path("out/textures.json"))
    args = parser.parse_args(argv)
    fills = args.fills.split(",")
    rows = [r for c in args.categories.split(",") for r in run(args.data, c, fills, args.epochs, args.cache)]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
