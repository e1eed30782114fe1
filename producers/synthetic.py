"""Procedural 2D+3D parts: aligned RGB + organized point cloud + defect masks.

Each part is a height field on a slightly tilted background plane, seen by an
orthographic camera. Colour is albedo × Lambertian shading computed from the
final height field, so a geometry-only defect (dent, bump) shows in colour only
through shading, a colour-only defect (stain) leaves the geometry untouched, and
crack / contamination change both. Pose, lighting, depth noise and missing
points vary per sample; everything is seeded and reproducible.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

PIXEL_PITCH_M = 0.0004  # 0.4 mm per pixel
CAMERA_DISTANCE_M = 0.30
CATEGORIES = ("ring", "puck", "hexnut")
DEFECTS = ("dent", "bump", "stain", "crack", "contamination")
DEFECT_MODALITY = {"dent": "3d", "bump": "3d", "stain": "2d", "crack": "both", "contamination": "both"}


@dataclass
class Part:
    rgb: np.ndarray  # H×W×3 uint8
    xyz: np.ndarray  # H×W×3 float32, zeros where no point
    mask: np.ndarray  # H×W bool, the defect's pixels (all False for good parts)
    category: str
    defect: str  # "good" or a name from DEFECTS


def _noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float | tuple[float, float]) -> np.ndarray:
    n = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (n - n.mean()) / (n.std() + 1e-12)


def _sample(field: np.ndarray, ly: np.ndarray, lx: np.ndarray) -> np.ndarray:
    """Sample a texture defined in the part's own frame (so it rotates with the part)."""
    c = field.shape[0] / 2
    return ndimage.map_coordinates(field, [ly + c, lx + c], order=1, mode="wrap")


# --- shapes: height in millimetres and albedo (RGB in 0..1) in local part coordinates --------


def _ring(rng: np.random.Generator, lx: np.ndarray, ly: np.ndarray, s: int) -> tuple[np.ndarray, np.ndarray]:
    big, small = 0.27 * s, 0.12 * s
    t = np.abs(np.hypot(lx, ly) - big)
    h = 7.0 * np.sqrt(np.clip(1 - (t / small) ** 2, 0, None))
    tex = _sample(_noise(rng, (2 * s, 2 * s), 3.0), ly, lx)
    base = np.array([0.72, 0.48, 0.25]) + rng.normal(0, 0.02, 3)
    albedo = base * (1 + 0.10 * tex[..., None])
    return h, albedo


def _puck(rng: np.random.Generator, lx: np.ndarray, ly: np.ndarray, s: int) -> tuple[np.ndarray, np.ndarray]:
    rad = np.hypot(lx, ly)
    edge = 0.36 * s
    top = 5.0 + 0.8 * (1 - (rad / edge) ** 2)  # slightly domed top
    h = top * np.clip((edge - rad) / 3.0, 0, 1) ** 0.5
    chips = _sample(_noise(rng, (2 * s, 2 * s), 1.6), ly, lx) > 1.7
    base = np.array([0.85, 0.75, 0.55]) + rng.normal(0, 0.02, 3)
    albedo = np.where(chips[..., None], np.array([0.35, 0.22, 0.12]), base)
    albedo = albedo * (1 + 0.05 * _sample(_noise(rng, (2 * s, 2 * s), 4.0), ly, lx)[..., None])
    return h, albedo


def _hexnut(rng: np.random.Generator, lx: np.ndarray, ly: np.ndarray, s: int) -> tuple[np.ndarray, np.ndarray]:
    angles = np.deg2rad(np.arange(0, 180, 60))
    hexdist = np.max([np.abs(lx * np.cos(a) + ly * np.sin(a)) for a in angles], axis=0)
    outer, hole = 0.32 * s, 0.13 * s
    rad = np.hypot(lx, ly)
    h = 6.0 * np.clip((outer - hexdist) / 2.5, 0, 1) * np.clip((rad - hole) / 2.5, 0, 1)
    brushed = _sample(_noise(rng, (2 * s, 2 * s), (0.6, 9.0)), ly, lx)
    base = np.array([0.62, 0.64, 0.68]) + rng.normal(0, 0.015, 3)
    albedo = base * (1 + 0.08 * brushed[..., None])
    return h, albedo


SHAPES: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {"ring": _ring, "puck": _puck, "hexnut": _hexnut}


# --- defects: modify height (mm) and albedo in place, return the pixel mask --------------------


def _blob_center(rng: np.random.Generator, fg: np.ndarray) -> tuple[int, int]:
    # Keep defects away from the part's silhouette so the mask stays on the part.
    inner = ndimage.binary_erosion(fg, iterations=4)
    ys, xs = np.nonzero(inner if inner.any() else fg)
    i = rng.integers(len(ys))
    return int(ys[i]), int(xs[i])


def _irregular_blob(rng: np.random.Generator, shape: tuple[int, int], cy: int, cx: int, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    d = np.hypot(yy - cy, xx - cx) / radius
    return d + 0.35 * _noise(rng, shape, radius / 2) < 1.0


def _apply_defect(rng: np.random.Generator, kind: str, h: np.ndarray, albedo: np.ndarray, fg: np.ndarray) -> np.ndarray:
    s = h.shape[0]
    cy, cx = _blob_center(rng, fg)
    yy, xx = np.mgrid[:s, :s]
    if kind in ("dent", "bump"):
        sigma = rng.uniform(0.03, 0.05) * s
        amp = rng.uniform(1.2, 2.0) * (-1 if kind == "dent" else 1)
        delta = amp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2)) * fg
        h += delta
        return np.abs(delta) > 0.25
    if kind == "stain":
        mask = _irregular_blob(rng, (s, s), cy, cx, rng.uniform(0.04, 0.08) * s) & fg
        tint = rng.choice([np.array([0.45, 0.40, 0.38]), np.array([0.55, 0.70, 0.45]), np.array([1.25, 1.1, 0.6])])
        albedo[mask] = np.clip(albedo[mask] * tint, 0, 1)
        return mask
    if kind == "crack":
        n = int(rng.uniform(0.18, 0.3) * s)
        heading = rng.uniform(0, 2 * np.pi)
        pts = []
        y, x = float(cy), float(cx)
        for _ in range(n):
            heading += rng.normal(0, 0.25)
            y, x = y + np.sin(heading), x + np.cos(heading)
            pts.append((int(round(y)), int(round(x))))
        line = np.zeros((s, s), bool)
        for py, px in pts:
            if 0 <= py < s and 0 <= px < s:
                line[py, px] = True
        mask = ndimage.binary_dilation(line, iterations=1) & fg
        h[mask] -= rng.uniform(1.0, 2.0)
        albedo[mask] *= 0.3
        return mask
    if kind == "contamination":
        mask = _irregular_blob(rng, (s, s), cy, cx, rng.uniform(0.035, 0.06) * s) & fg
        soft = ndimage.gaussian_filter(mask.astype(float), 1.0)
        h += 1.2 * soft
        colour = rng.choice([np.array([0.15, 0.25, 0.7]), np.array([0.08, 0.08, 0.08]), np.array([0.9, 0.9, 0.95])])
        albedo[mask] = colour
        return mask
    raise ValueError(f"unknown defect {kind!r} (known: {', '.join(DEFECTS)})")


# --- rendering -------------------------------------------------------------------------------


def render_part(category: str, rng: np.random.Generator, defect: str = "good", size: int = 128) -> Part:
    """Render one part of ``category``; ``defect`` is "good" or one of :data:`DEFECTS`."""
    if category not in SHAPES:
        raise ValueError(f"unknown category {category!r} (known: {', '.join(CATEGORIES)})")
    s = size
    yy, xx = np.mgrid[:s, :s].astype(np.float64)
    cy, cx = s / 2 + rng.uniform(-0.06, 0.06, 2) * s
    theta = rng.uniform(0, 2 * np.pi)
    c, si = np.cos(theta), np.sin(theta)
    lx = c * (xx - cx) + si * (yy - cy)
    ly = -si * (xx - cx) + c * (yy - cy)

    h, albedo = SHAPES[category](rng, lx, ly, s)
    fg = h > 0.5
    mask = np.zeros((s, s), bool)
    if defect != "good":
        mask = _apply_defect(rng, defect, h, albedo, fg)
    bg_albedo = np.array([0.30, 0.34, 0.32]) * (1 + 0.04 * _noise(rng, (s, s), 2.0))[..., None]
    albedo = np.where(fg[..., None] | mask[..., None], albedo, bg_albedo)

    # Lambertian shading from the height field (both in millimetres).
    pitch_mm = PIXEL_PITCH_M * 1000
    gy, gx = np.gradient(h, pitch_mm)
    normal = np.dstack([-gx, -gy, np.ones_like(h)])
    normal /= np.linalg.norm(normal, axis=2, keepdims=True)
    elev, azim = np.deg2rad(rng.uniform(45, 70)), rng.uniform(0, 2 * np.pi)
    light = np.array([np.cos(elev) * np.cos(azim), np.cos(elev) * np.sin(azim), np.sin(elev)])
    shade = rng.uniform(0.30, 0.40) + rng.uniform(0.6, 0.75) * np.clip(normal @ light, 0, None)
    rgb = albedo * shade[..., None] * rng.uniform(0.9, 1.1)
    rgb = rgb + rng.normal(0, 0.01, rgb.shape)
    rgb8 = (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)

    # Organized cloud: tilted background plane minus the part's height, plus sensor noise.
    tilt = rng.uniform(-0.03, 0.03, 2)
    x_m = (xx - s / 2) * PIXEL_PITCH_M
    y_m = (yy - s / 2) * PIXEL_PITCH_M
    z_m = CAMERA_DISTANCE_M + tilt[0] * x_m + tilt[1] * y_m - h / 1000 + rng.normal(0, 3e-5, (s, s))
    xyz = np.dstack([x_m, y_m, z_m]).astype(np.float32)
    # Missing points: steep flanks and a few random dropout blobs, as structured-light sensors do.
    slope = np.hypot(gx, gy)
    missing = (slope > 2.5) & (rng.random((s, s)) < 0.5)
    for _ in range(rng.integers(0, 4)):
        by, bx = rng.integers(0, s, 2)
        missing |= np.hypot(yy - by, xx - bx) < rng.uniform(1, max(1.5, 0.03 * s))
    xyz[missing] = 0.0
    return Part(rgb=rgb8, xyz=xyz, mask=mask, category=category, defect=defect)


def part_stream(categories: tuple[str, ...], seed: int, defect_rate: float, size: int):
    """An endless stream of parts, ~``defect_rate`` of them defective (for replay into Kafka)."""
    rng = np.random.default_rng(seed)
    while True:
        cat = categories[rng.integers(len(categories))]
        defect = DEFECTS[rng.integers(len(DEFECTS))] if rng.random() < defect_rate else "good"
        yield render_part(cat, np.random.default_rng(rng.integers(1 << 62)), defect, size)
