"""Train and evaluate methods on MVTec 3D-AD-layout (or Eyecandies) data, the field's way.

``evaluate`` scores every test sample, writes one float32 TIFF map per sample at
ground-truth resolution (``<maps>/<defect>/<NNN>.tiff``, the official evaluator's format),
a JSON report and a PNG panel of the best and worst cases.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from PIL import Image, ImageDraw
from rich.progress import track

from duoscan.models import AnomalyModel, create, required_inputs, with_all_inputs
from duoscan.models.metrics import aupro, image_auroc, pixel_auroc
from duoscan.producers.dataset import Sample, dataset_inputs, iter_dataset

from .core.overlay import colormap


def train_model(
    data: Path,
    category: str,
    method: str,
    modality: str = "both",
    device: str = "cpu",
    target_fpr: float = 0.01,
    cache_dir: str | None = None,
    progress: bool = True,
    shots: int | None = None,
    **options: Any,
) -> AnomalyModel:
    """Fit on ``train`` (good only), calibrate the threshold on ``validation`` (good only). Never touches test.

    ``shots`` keeps K training frames (a fixed, seeded choice) for few-shot runs.
    """
    model = create(method, modality=modality, device=device, cache_dir=cache_dir, **options)
    model.category = category
    check_inputs(data, category, model, modality)
    frames = with_all_inputs(list(iter_dataset(data, category, "train")))
    if shots:
        keep = sorted(np.random.default_rng(0).choice(len(frames), min(shots, len(frames)), replace=False))
        frames = [frames[i] for i in keep]
    model.fit(frames, progress=progress)
    model.calibrate(with_all_inputs(list(iter_dataset(data, category, "validation"))), target_fpr)
    return model


def check_inputs(data: Path, category: str, model: AnomalyModel, modality: str = "both") -> None:
    """Refuse before training when the data lacks an input the model (or the chosen modality) needs."""
    has = dataset_inputs(data, category)
    takes_modality = hasattr(model, "modality")  # the weight-free baseline fuses whatever the frames carry
    want = set(required_inputs(model)) | (
        ({"rgb", "xyz"} if modality == "both" else {modality}) if takes_modality else set()
    )
    if missing := sorted(want - set(has)):
        fix = (
            f"--modality {has[0]}" if len(has) == 1 and takes_modality else "a method that works on " + " + ".join(has)
        )
        raise MissingInputError(
            f"{model.name} with --modality {modality} needs {' and '.join(missing)}, but "
            f"{data}/{category}/train/good has only "
            f"{' and '.join(f'{m}/' for m in has)}: use {fix}"
        )


class MissingInputError(FileNotFoundError):
    """The dataset lacks a folder (rgb/ or xyz/) the chosen method or modality needs."""


def blank_point_clouds(samples: list[Sample], fraction: float, seed: int = 0) -> tuple[list[Sample], set[int]]:
    """Zero the point clouds of a fixed, seeded ``fraction`` of samples (depth dropout drill),
    taken separately from good and anomalous samples so both stay represented."""
    if not 0 <= fraction <= 1:
        raise ValueError("blank_xyz must be between 0 and 1")
    rng = np.random.default_rng(seed)
    chosen: set[int] = set()
    for label in (0, 1):
        group = [i for i, s in enumerate(samples) if int(getattr(s, "label", 0)) == label]
        chosen |= {group[int(k)] for k in rng.permutation(len(group))[: round(fraction * len(group))]}
    return [replace(s, xyz=np.zeros_like(s.xyz)) if i in chosen else s for i, s in enumerate(samples)], chosen


def json_safe(value: Any) -> Any:
    """NaN/inf (a metric without both classes, e.g. a test split without gt/ masks) as JSON null: bare NaN is not
    JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def evaluate_model(
    model: AnomalyModel,
    data: Path,
    category: str,
    json_out: Path | None = None,
    maps_dir: Path | None = None,
    panel: Path | None = None,
    batch: int = 8,
    progress: bool = True,
    blank_xyz: float = 0.0,
    draws: int = 0,
) -> dict[str, Any]:
    """Score the test split. ``blank_xyz`` zeroes that share of the test frames' point clouds first;
    the report then also gives I-AUROC on the blanked frames alone and how many were scored degraded.
    ``draws`` > 0 adds that many paired bootstrap draws of I-AUROC and AUPRO@30% (:mod:`models.bootstrap`;
    the same resampled test sets for every method on this category)."""
    samples = with_all_inputs(list(iter_dataset(data, category, "test")))
    if not samples:
        raise ValueError(f"no test samples for {category} in {data}")
    samples, blanked = blank_point_clouds(samples, blank_xyz) if blank_xyz else (samples, set())
    scores, maps, degraded, timing = _score_all(
        model, samples, batch, f"evaluating {model.name} on {category}", progress
    )
    report = {
        "method": model.name,
        "config": model.config(),
        "category": category,
        "n_test": len(samples),
        "n_anomalous": int(sum(s.label for s in samples)),
        **accuracy(samples, scores, maps),
        "threshold": model.threshold,
        "image_scores": {f"{s.defect}/{s.name}": sc for s, sc in zip(samples, scores, strict=True)},
        "n_degraded": int(sum(degraded)),
        "timing": timing,
    }
    if draws:
        report["bootstrap"] = bootstrap_draws(samples, scores, maps, draws)
    if blanked:
        labels = [s.label for s in samples]
        intact = [i for i in range(len(samples)) if i not in blanked]
        report["blank_xyz"] = blank_xyz
        report["i_auroc_blanked"] = image_auroc(
            [labels[i] for i in sorted(blanked)], [scores[i] for i in sorted(blanked)]
        )
        report["i_auroc_intact"] = image_auroc([labels[i] for i in intact], [scores[i] for i in intact])
    if maps_dir:
        for s, m in zip(samples, maps, strict=True):
            (maps_dir / s.defect).mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(maps_dir / s.defect / f"{s.name}.tiff", m)
    if panel:
        save_panel(samples, scores, maps, panel)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(json_safe(report), indent=2, allow_nan=False))
    return report


def _score_all(
    model: AnomalyModel, samples: list, batch: int, label: str, progress: bool
) -> tuple[list[float], list[np.ndarray], list[bool], dict[str, float]]:
    """Image scores, maps and degraded flags of ``samples`` in batches, and where the time went."""
    scores: list[float] = []
    maps: list[np.ndarray] = []
    degraded: list[bool] = []
    features_s = lambda: getattr(getattr(model, "pipeline", None), "timing", {}).get("features_s", 0.0)  # noqa: E731
    t0, f0 = time.perf_counter(), features_s()
    chunks = [samples[i : i + batch] for i in range(0, len(samples), batch)]
    for chunk in track(chunks, description=label, disable=not progress):
        out = model.score(chunk)
        scores += [float(s) for s in out.image_scores]
        maps += [m.astype(np.float32) for m in out.pixel_maps]
        degraded += out.degraded
    total_s, feat_s = time.perf_counter() - t0, features_s() - f0
    timing = {"total_s": total_s, "features_s": feat_s, "scoring_s": total_s - feat_s, "fps": len(samples) / total_s}
    return scores, maps, degraded, timing


def bootstrap_draws(samples: list, scores: list[float], maps: list[np.ndarray], draws: int) -> dict[str, list[float]]:
    """I-AUROC and AUPRO@30% on ``draws`` stratified resamples of the test frames; the resamples depend only
    on the labels (seed 0), so two methods' draws on one category pair up."""
    from duoscan.models import bootstrap

    labels = [s.label for s in samples]
    weights = bootstrap.stratified_weights(labels, draws)
    out = {"i_auroc": bootstrap.image_auroc_draws(labels, scores, weights)}
    if any(s.mask.any() for s in samples):
        out["aupro_30"] = bootstrap.aupro_draws([s.mask for s in samples], maps, weights, 0.3)
    return {k: v.tolist() for k, v in out.items()}


def accuracy(samples: list, scores: list[float], maps: list[np.ndarray]) -> dict[str, Any]:
    """The four metrics (I-AUROC, P-AUROC, AUPRO at 30 % and 1 % FPR) and I-AUROC per defect type."""
    masks = [s.mask for s in samples]
    labels = [s.label for s in samples]
    has_defects = any(m.any() for m in masks)
    return {
        "i_auroc": image_auroc(labels, scores),
        "p_auroc": pixel_auroc(masks, maps),
        "aupro_30": aupro(masks, maps, 0.3) if has_defects else float("nan"),
        "aupro_01": aupro(masks, maps, 0.01) if has_defects else float("nan"),
        "per_defect_i_auroc": {
            d: image_auroc(
                [s.label for s in samples if s.defect in (d, "good")],
                [sc for s, sc in zip(samples, scores, strict=True) if s.defect in (d, "good")],
            )
            for d in sorted({s.defect for s in samples} - {"good"})
        },
    }


def _depth_image(xyz: np.ndarray) -> np.ndarray:
    z = xyz[..., 2]
    valid = np.any(xyz != 0, axis=2)
    out = np.zeros(z.shape, np.float32)
    if valid.any():
        lo, hi = np.percentile(z[valid], [1, 99])
        out[valid] = np.clip((hi - z[valid]) / max(hi - lo, 1e-9), 0, 1)  # near = bright
    return (np.dstack([out] * 3) * 255).astype(np.uint8)


def save_panel(samples: list[Sample], scores: list[float], maps: list[np.ndarray], path: Path, n: int = 3) -> Path:
    """Rows of RGB | depth | heatmap | ground truth: the worst misses and false alarms, then the clearest hits."""
    order = np.argsort(scores)
    bad = [i for i in order if samples[i].label]
    good = [i for i in order if not samples[i].label]
    picks = (
        [("missed anomaly", i) for i in bad[:n]]
        + [("false alarm", i) for i in good[::-1][:n]]
        + [("clearest anomaly", i) for i in bad[::-1][:n]]
    )
    hi = max(float(np.percentile(np.concatenate([m.ravel() for m in maps]), 99.9)), 1e-9)
    rows = []
    size = 160
    for label, i in picks:
        s = samples[i]
        tiles = [s.rgb, _depth_image(s.xyz), colormap(maps[i] / hi), (np.dstack([s.mask] * 3) * 255).astype(np.uint8)]
        row = Image.new("RGB", (size * 4, size + 16), (255, 255, 255))
        for j, t in enumerate(tiles):
            row.paste(Image.fromarray(t).resize((size, size)), (j * size, 16))
        ImageDraw.Draw(row).text((4, 2), f"{label}: {s.defect}/{s.name} score {scores[i]:.3f}", fill=(0, 0, 0))
        rows.append(row)
    sheet = Image.new("RGB", (size * 4, (size + 16) * max(1, len(rows))), (255, 255, 255))
    for k, r in enumerate(rows):
        sheet.paste(r, (0, k * (size + 16)))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def save_anomaly_preview(samples: list[Sample], path: Path, n: int = 4, seed: int = 0) -> Path:
    """PNG of synthetic training anomalies: per good frame, RGB | visible depth | texture anomaly (RGB,
    depth, mask) | Gaussian depth anomaly (depth, mask) — what BridgeNet trains its discriminator on."""
    from duoscan.models.preprocess import PreprocessConfig, prepare
    from duoscan.models.synthesis import MultiScaleGaussianGenerator, UnifiedTextureGenerator
    from duoscan.models.visible_depth import grey_image as grey
    from duoscan.models.visible_depth import part_region, visible_depth

    rng = np.random.default_rng(seed)
    prepared = [prepare(s.rgb, s.xyz, PreprocessConfig()) for s in samples[: max(n, 2)]]
    depths = [visible_depth(p) for p in prepared]
    donors = list(zip([p.rgb for p in prepared], depths, strict=True))
    size, rows = 128, []
    names = [
        "rgb",
        "visible depth",
        "texture: rgb",
        "texture: depth",
        "texture: mask",
        "gaussian: depth",
        "gaussian: mask",
    ]
    for i, p in enumerate(prepared[:n]):
        region = part_region(p.valid)
        tex = UnifiedTextureGenerator()(p.rgb, depths[i], region, rng, donors[:i] + donors[i + 1 :], target="both")
        gau = MultiScaleGaussianGenerator().depth(p.rgb, depths[i], region, rng)
        tiles = [
            p.rgb,
            grey(depths[i]),
            tex.rgb,
            grey(tex.depth),
            grey(tex.mask.astype(np.float32)),
            grey(gau.depth),
            grey(gau.mask.astype(np.float32)),
        ]
        row = Image.new("RGB", (size * len(tiles), size), (255, 255, 255))
        for j, t in enumerate(tiles):
            row.paste(Image.fromarray(t).resize((size, size)), (j * size, 0))
        rows.append(row)
    sheet = Image.new("RGB", (size * len(names), 16 + size * len(rows)), (255, 255, 255))
    for j, name in enumerate(names):
        ImageDraw.Draw(sheet).text((j * size + 4, 2), name, fill=(0, 0, 0))
    for k, r in enumerate(rows):
        sheet.paste(r, (0, 16 + k * size))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def parse_spec(spec: str) -> tuple[str, str | None, dict[str, Any]]:
    """``method[:modality][:key=value...]``: ``btf:xyz`` -> (btf, xyz, {}); ``mafr:both:shots=5:w_census=0``;
    the modality is None when the spec leaves it out.

    ``blank_xyz=F`` is read by the benchmark as an evaluation option (blank that share of test clouds)."""
    method, *rest = spec.split(":")
    modality = rest.pop(0) if rest and "=" not in rest[0] else None
    options: dict[str, Any] = {}
    for item in rest:
        key, _, raw = item.partition("=")
        try:
            options[key] = json.loads(raw)  # numbers, true/false, lists
        except json.JSONDecodeError:
            options[key] = raw  # plain words such as fpfh or product
    return method, modality, options


def benchmark_table(
    data: Path,
    specs: list[str],
    categories: list[str],
    out: Path,
    device: str = "cpu",
    cache_dir: str | None = None,
    reference: str | None = "patchcore:both",
    draws: int = 1000,
) -> str:
    """Train + evaluate every method spec on every category; markdown table of the four metrics, and (when
    ``reference`` is one of the specs) each other spec's difference to it with a paired bootstrap 95 % interval."""
    rows: list[dict[str, Any]] = []
    for spec in specs:
        method, modality, options = parse_spec(spec)
        blank = float(options.get("blank_xyz", 0.0))  # an evaluation option, not a model one
        train_options = {k: v for k, v in options.items() if k != "blank_xyz"}
        for cat in categories:
            t0 = time.perf_counter()
            model = train_model(data, cat, method, modality or "both", device, cache_dir=cache_dir, **train_options)
            train_s = time.perf_counter() - t0
            rep = evaluate_model(
                model,
                data,
                cat,
                blank_xyz=blank,
                json_out=out / spec.replace(":", "-").replace("=", "") / f"{cat}.json",
                draws=draws if reference in specs else 0,
            )
            rep["train_s"] = train_s
            rows.append({"spec": spec, **rep})
    lines = metrics_table(rows, specs)
    if reference in specs and draws:
        lines += ["", *difference_table(rows, specs, reference)]
    table = "\n".join(lines)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table + "\n")
    (out / "results.json").write_text(
        json.dumps(
            json_safe([{k: v for k, v in r.items() if k not in ("image_scores", "bootstrap")} for r in rows]),
            indent=2,
            allow_nan=False,
        )
    )
    return table


def metrics_table(rows: list[dict[str, Any]], specs: list[str]) -> list[str]:
    """Markdown rows: the four metrics per spec and category, then each spec's mean over its categories."""
    blanked = any("i_auroc_blanked" in r for r in rows)  # depth-dropout runs: also I-AUROC on the blanked frames
    extra = lambda r: f" {r['i_auroc_blanked']:.3f} |" if "i_auroc_blanked" in r else " |"  # noqa: E731
    lines = [
        "| method | category | I-AUROC | P-AUROC | AUPRO@30% | AUPRO@1% | train s | test fps |"
        + (" I-AUROC blanked |" if blanked else ""),
        "|---|---|---|---|---|---|---|---|" + ("---|" if blanked else ""),
    ]
    for r in rows:
        lines.append(
            f"| {r['spec']} | {r['category']} | {r['i_auroc']:.3f} | {r['p_auroc']:.3f} | {r['aupro_30']:.3f} | "
            f"{r['aupro_01']:.3f} | {r['train_s']:.0f} | {r['timing']['fps']:.1f} |" + (extra(r) if blanked else "")
        )
    for spec in specs:
        mine = [r for r in rows if r["spec"] == spec]
        mean = {k: float(np.mean([r[k] for r in mine])) for k in ("i_auroc", "p_auroc", "aupro_30", "aupro_01")}
        tail = (
            (f" **{np.mean([r['i_auroc_blanked'] for r in mine]):.3f}** |" if "i_auroc_blanked" in mine[0] else " |")
            if blanked
            else ""
        )
        lines.append(
            f"| **{spec}** | **mean** | **{mean['i_auroc']:.3f}** | **{mean['p_auroc']:.3f}** | "
            f"**{mean['aupro_30']:.3f}** | **{mean['aupro_01']:.3f}** | | |" + tail
        )
    return lines


def difference_table(rows: list[dict[str, Any]], specs: list[str], reference: str) -> list[str]:
    """Markdown rows: each spec's mean (over categories) I-AUROC and AUPRO@30% minus ``reference``'s, with the
    2.5-97.5 percentiles of the same difference over paired bootstrap draws (each category resampled alike)."""
    from duoscan.models.bootstrap import interval

    ref = {r["category"]: r for r in rows if r["spec"] == reference}
    lines = [
        f"Difference to {reference} (mean over categories; 95 % paired bootstrap interval over test frames):",
        "",
        "| method | ΔI-AUROC | 95 % interval | ΔAUPRO@30% | 95 % interval |",
        "|---|---|---|---|---|",
    ]
    for spec in specs:
        if spec == reference:
            continue
        mine = [r for r in rows if r["spec"] == spec and r["category"] in ref]
        cells = []
        for key in ("i_auroc", "aupro_30"):
            point = float(np.mean([r[key] - ref[r["category"]][key] for r in mine]))
            paired = [
                np.asarray(r["bootstrap"][key]) - np.asarray(ref[r["category"]]["bootstrap"][key])
                for r in mine
                if key in r.get("bootstrap", {})
            ]
            lo, hi = interval(np.mean(paired, axis=0)) if paired else (float("nan"), float("nan"))
            cells.append(f"{point:+.3f} | [{lo:+.3f}, {hi:+.3f}]")
            for r, d in zip(mine, paired, strict=False):
                r.setdefault("difference", {})[key] = {
                    "to": reference,
                    "point": r[key] - ref[r["category"]][key],
                    "interval": interval(d),
                }
        lines.append(f"| {spec} | " + " | ".join(cells) + " |")
    return lines
