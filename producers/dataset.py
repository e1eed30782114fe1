"""MVTec 3D-AD on-disk layout: write synthetic parts into it, read samples back.

Layout: ``<cat>/{train,validation}/good/{rgb/*.png, xyz/*.tiff}`` and
``<cat>/test/<defect|good>/{rgb,xyz,gt}/NNN.*``; xyz is an H×W×3 float32 TIFF with
zeros for missing points. A missing gt file means "no defect" (all zeros).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image
from rich.progress import Progress

from .realistic import REALISTIC_CATEGORIES, REALISTIC_DEFECTS, REALISTIC_SIZE, render_realistic
from .sample import Sample as Sample  # re-exported: the readers' sample type lives in sample.py
from .sample import make_sample
from .synthetic import CATEGORIES, DEFECTS, render_part

SPLITS = ("train", "validation", "test")
# the development benchmark; `realistic` is the same parts at the hard defect level, with fewer test frames
STANDARD = dict(
    categories=REALISTIC_CATEGORIES,
    defects=REALISTIC_DEFECTS,
    size=REALISTIC_SIZE,
    n_train=60,
    n_validation=15,
    n_test_good=40,
    n_test_per_defect=12,
    level="standard",
)
# profile -> categories, defects and the counts `duoscan synth` uses unless told otherwise
PROFILES = {
    "fast": dict(
        categories=CATEGORIES,
        defects=DEFECTS,
        size=128,
        n_train=40,
        n_validation=10,
        n_test_good=10,
        n_test_per_defect=6,
    ),
    "standard": STANDARD,
    "realistic": dict(STANDARD, n_test_good=15, n_test_per_defect=6, level="hard"),
}


def write_sample(
    root: Path,
    category: str,
    split: str,
    defect: str,
    index: int,
    rgb: np.ndarray,
    xyz: np.ndarray,
    mask: np.ndarray | None,
) -> None:
    base = root / category / split / defect
    name = f"{index:03d}"
    for sub in ("rgb", "xyz") + (("gt",) if mask is not None else ()):
        (base / sub).mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(base / "rgb" / f"{name}.png")
    tifffile.imwrite(base / "xyz" / f"{name}.tiff", xyz.astype(np.float32), photometric="rgb")
    if mask is not None:
        Image.fromarray((mask > 0).astype(np.uint8) * 255).save(base / "gt" / f"{name}.png")


def write_synthetic_dataset(
    out: Path,
    categories: tuple[str, ...] | None = None,
    size: int | None = None,
    n_train: int | None = None,
    n_validation: int | None = None,
    n_test_good: int | None = None,
    n_test_per_defect: int | None = None,
    seed: int = 0,
    progress: bool = True,
    profile: str = "fast",
) -> Path:
    """Render a synthetic dataset in MVTec 3D-AD's layout; returns ``out``.

    ``profile``: ``fast`` (128 px, 3 categories whose defects light always shades: the demo and tests),
    ``standard`` (:mod:`producers.realistic` at its standard defect level: the development benchmark) or
    ``realistic`` (the same parts with the hard level's subtle defects). Unset counts take the
    profile's. Each frame is seeded by (seed, category, split, defect, index): another ``seed`` is a
    wholly new set of parts, which is how a tuning set is kept apart from the test set.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r} (known: {', '.join(PROFILES)})")
    spec = PROFILES[profile]
    cats: tuple[str, ...] = categories or spec["categories"]
    defects: tuple[str, ...] = spec["defects"]
    size = size or spec["size"]
    counts = [
        spec[k] if v is None else v
        for k, v in (
            ("n_train", n_train),
            ("n_validation", n_validation),
            ("n_test_good", n_test_good),
            ("n_test_per_defect", n_test_per_defect),
        )
    ]
    plan: list[tuple[str, str, str, int]] = []
    for cat in cats:
        plan += [(cat, "train", "good", i) for i in range(counts[0])]
        plan += [(cat, "validation", "good", i) for i in range(counts[1])]
        plan += [(cat, "test", "good", i) for i in range(counts[2])]
        plan += [(cat, "test", d, i) for d in defects for i in range(counts[3])]
    known = spec["categories"]
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"rendering synthetic parts ({profile})", total=len(plan))
        for cat, split, defect, i in plan:
            key = [
                seed,
                known.index(cat) if cat in known else 99,
                SPLITS.index(split),
                (defects + ("good",)).index(defect),
                i,
            ]
            part = (
                render_realistic(cat, key, defect, size, spec["level"])
                if "level" in spec
                else render_part(cat, np.random.default_rng(key), defect, size)
            )
            write_sample(out, cat, split, defect, i, part.rgb, part.xyz, part.mask if split == "test" else None)
            bar.advance(task)
    return out


def categories_in(root: Path) -> list[str]:
    """The category folders of a dataset root (FileNotFoundError naming the root if there are none)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"dataset folder {root} does not exist: render one with `duoscan synth --out {root}` or point --data "
            "at a dataset"
        )
    found = sorted(
        p.name
        for p in root.iterdir()
        if (p / "train").is_dir() or (p / "test").is_dir() or (p / "test_public").is_dir()
    )
    if not found:
        raise FileNotFoundError(
            f"{root} holds no category in MVTec 3D-AD or Eyecandies layout (<category>/train/good/rgb/...)"
        )
    return found


def check_category(root: Path, category: str) -> None:
    """Fail before any long work if ``category`` is not in the dataset, naming the ones that are."""
    known = categories_in(root)
    if category not in known:
        raise FileNotFoundError(f"no category {category!r} in {root}: it has {', '.join(known)}")


def iter_samples(root: Path, category: str, split: str) -> Iterator[Sample]:
    """Yield every sample of one split of one category, defects sorted by name."""
    split_dir = Path(root) / category / split
    if not split_dir.is_dir():
        raise FileNotFoundError(f"{split_dir} does not exist (expected MVTec 3D-AD layout)")
    for defect_dir in sorted(d for d in split_dir.iterdir() if d.is_dir()):
        # A colour-only dataset has no xyz/ folder, a 3D-only one no rgb/: the sample then carries None there.
        has_rgb, has_xyz = (defect_dir / "rgb").is_dir(), (defect_dir / "xyz").is_dir()
        if not (has_rgb or has_xyz):
            raise FileNotFoundError(f"{defect_dir} has neither rgb/ nor xyz/ (expected MVTec 3D-AD layout)")
        stems = (
            sorted(p.stem for p in (defect_dir / "rgb").glob("*.png"))
            if has_rgb
            else sorted(p.stem for p in (defect_dir / "xyz").glob("*.tiff"))
        )
        for stem in stems:
            xyz_path = defect_dir / "xyz" / f"{stem}.tiff"
            if has_xyz and not xyz_path.is_file():
                raise FileNotFoundError(
                    f"{xyz_path} is missing: each rgb/NNN.png of {defect_dir} needs its xyz/NNN.tiff"
                )
            rgb = np.asarray(Image.open(defect_dir / "rgb" / f"{stem}.png").convert("RGB")) if has_rgb else None
            xyz = np.asarray(tifffile.imread(xyz_path), dtype=np.float32) if has_xyz else None
            gt_path = defect_dir / "gt" / f"{stem}.png"
            shape = (rgb if rgb is not None else xyz).shape[:2]  # type: ignore[union-attr]
            mask = np.asarray(Image.open(gt_path).convert("L")) > 0 if gt_path.exists() else np.zeros(shape, bool)
            yield make_sample(rgb, xyz, mask, category, split, defect_dir.name, stem, str(root))


def dataset_inputs(root: Path, category: str) -> tuple[str, ...]:
    """Which inputs the category's training frames carry: ("rgb", "xyz"), ("rgb",) or ("xyz",)."""
    if detect_layout(root, category) == "eyecandies":
        return ("rgb", "xyz")
    good = Path(root) / category / "train" / "good"
    return tuple(m for m in ("rgb", "xyz") if (good / m).is_dir())


def detect_layout(root: Path, category: str) -> str:
    """'mvtec' (``<cat>/train/good/rgb``) or 'eyecandies' (``<Cat>/train/data``)."""
    base = Path(root) / category
    if (base / "train" / "data").is_dir():
        return "eyecandies"
    if (base / "train" / "good").is_dir() or (base / "test").is_dir():
        return "mvtec"
    raise FileNotFoundError(f"{base} is neither MVTec 3D-AD nor Eyecandies layout")


def iter_dataset(root: Path, category: str, split: str) -> Iterator[Sample]:
    """Samples of either supported layout; ``split`` is train, validation or test."""
    if detect_layout(root, category) == "eyecandies":
        from .eyecandies import iter_eyecandies

        return iter_eyecandies(root, category, split)
    return iter_samples(root, category, split)
