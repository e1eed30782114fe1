"""Eyecandies reader: ``<Cat>/{train,val,test_public}/data/NNN_*`` -> organized point clouds.

Each sample has six RGB lightings (``NNN_image_{0..5}.png``), a 16-bit depth PNG whose
``NNN_info_depth.yaml`` gives the metric range (``normalization.min/max``), a 4×4 camera pose
(``NNN_pose.txt``) and, in the test split, ``NNN_mask.png``. The point cloud is built as the
public converters (CFM, M3DM) do: pinhole intrinsics with focal 711.11 px and the principal
point at the image centre, every pixel (u, v, 1, 1/depth) back-projected through
``inv(K @ pose)`` and multiplied by its depth. Unlike those scripts we join paths onto the
dataset root (theirs drop it) and keep metres (no ×0.1 rescale; our preprocessing is scale-aware).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from .sample import Sample, make_sample

FOCAL_LENGTH_PX = 711.11
SPLITS = {"train": "train", "validation": "val", "val": "val", "test": "test_public", "test_public": "test_public"}
CATEGORIES = (
    "CandyCane",
    "ChocolateCookie",
    "ChocolatePraline",
    "Confetto",
    "GummyBear",
    "HazelnutTruffle",
    "LicoriceSandwich",
    "Lollipop",
    "Marshmallow",
    "PeppermintCandy",
)


def load_depth(depth_png: Path, info_yaml: Path) -> np.ndarray:
    info = yaml.safe_load(info_yaml.read_text())
    lo, hi = float(info["normalization"]["min"]), float(info["normalization"]["max"])
    raw = np.asarray(Image.open(depth_png), dtype=np.float64)
    return raw / 65535.0 * (hi - lo) + lo


def depth_to_xyz(depth_m: np.ndarray, pose: np.ndarray, focal: float = FOCAL_LENGTH_PX) -> np.ndarray:
    """Back-project a metric depth map into an organized H×W×3 cloud in the pose's frame."""
    h, w = depth_m.shape
    k = np.array([[focal, 0, w / 2, 0], [0, focal, h / 2, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float64)
    inv = np.linalg.inv(k @ pose)
    v, u = np.mgrid[:h, :w].astype(np.float64)
    with np.errstate(divide="ignore"):
        inv_depth = np.where(depth_m > 0, 1.0 / depth_m, 0.0)
    vec = np.stack([u, v, np.ones_like(u), inv_depth], axis=-1).reshape(-1, 4)
    pts = (depth_m.reshape(-1, 1) * (vec @ inv.T))[:, :3]
    pts[depth_m.reshape(-1) <= 0] = 0.0
    return pts.reshape(h, w, 3).astype(np.float32)


def iter_eyecandies(root: Path, category: str, split: str, lighting: int = 4) -> Iterator[Sample]:
    """Yield samples of one category and split (``train``, ``validation``/``val``, ``test``/``test_public``).

    ``lighting`` picks the RGB image (CFM and M3DM use image 4). A test sample whose mask
    has any foreground pixel is anomalous ("bad"); the others are "good".
    """
    folder = Path(root) / category / SPLITS.get(split, split) / "data"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist (expected Eyecandies layout <Cat>/<split>/data)")
    canonical = "validation" if split in ("val", "validation") else ("test" if split.startswith("test") else split)
    for depth_png in sorted(folder.glob("*_depth.png")):
        stem = depth_png.name[: -len("_depth.png")]
        rgb = np.asarray(Image.open(folder / f"{stem}_image_{lighting}.png").convert("RGB"))
        depth = load_depth(depth_png, folder / f"{stem}_info_depth.yaml")
        xyz = depth_to_xyz(depth, np.loadtxt(folder / f"{stem}_pose.txt"))
        mask_path = folder / f"{stem}_mask.png"
        mask = (
            np.asarray(Image.open(mask_path).convert("L")) > 0 if mask_path.exists() else np.zeros(rgb.shape[:2], bool)
        )
        yield make_sample(rgb, xyz, mask, category, canonical, "bad" if mask.any() else "good", stem, str(root))
