"""The realistic synthetic profile (``duoscan synth --profile realistic``): a development benchmark
that a weight-free baseline cannot saturate.

What makes it closer to real structured-light inspection than :mod:`producers.synthetic`:

* 400 px frames and a perspective camera (focal 1200 px at 0.3 m, about 0.25 mm per pixel);
* six categories, three without rotational symmetry (``bracket``, ``connector``, ``plate``) and three
  whose good samples vary naturally in shape, texture and colour (``potato``, ``cookie``, and the wood
  grain of ``plate``); ``gear`` has teeth and a keyway;
* free in-plane rotation, position and a tilted support plane;
* light from coaxial (geometry nearly invisible in colour) to raking, plus specular metal;
* small, subtle defects of five kinds, 0.1–2 % of the part's area (log-uniform): shallow ``dent`` and
  ``bump`` (3–10 noise levels deep), ``scratch`` (a thin groove), faint ``stain`` (colour only) and
  ``contamination`` (a small foreign particle);
* sensor artefacts: depth noise growing with the square of distance and with surface slope, missing
  points on steep flanks and in the projector's shadow, and dropout blobs.

The part, pose, light and sensor draw from one generator and the defect from a second one, so a
defective frame differs from its good twin only inside its mask (tested).

Defect size is a level (:data:`LEVELS`): ``hard`` (the ``realistic`` profile: defects at the edge of what the
sensor resolves, where every method is near chance at image level) and ``standard`` (the ``standard`` profile,
the development benchmark that ranks methods: the same parts, light and sensor, defects a few times larger and
deeper, sized so that the late-fusion reference lands between 0.80 and 0.92 mean I-AUROC on the tuning seed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .synthetic import Part, _noise, _sample

REALISTIC_CATEGORIES = ("bracket", "gear", "potato", "cookie", "connector", "plate")
REALISTIC_DEFECTS = ("dent", "bump", "scratch", "stain", "contamination")
REALISTIC_SIZE = 400
FOCAL_PX = 1200.0
DISTANCE_M = 0.30
PITCH_MM = DISTANCE_M / FOCAL_PX * 1000  # ~0.25 mm per pixel on the support plane
NOISE_MM = 0.02  # depth noise (1 sigma) at DISTANCE_M on a flat surface


@dataclass(frozen=True)
class DefectSizes:
    """How large and how deep a level's defects are; depths in units of the sensor's depth noise."""

    area: tuple[float, float]  # share of the part's area, drawn log-uniform
    depth: tuple[float, float]  # dent / bump
    scratch_depth: tuple[float, float]
    scratch_width: tuple[float, float]  # pixels
    stain: tuple[float, float]  # how much darker or tinted
    particle: tuple[float, float]  # contamination height


LEVELS = {
    "hard": DefectSizes((0.001, 0.02), (3, 10), (3, 8), (1.5, 3.0), (0.06, 0.15), (3, 12)),
    "standard": DefectSizes((0.004, 0.04), (15, 40), (6, 16), (2.0, 4.0), (0.20, 0.40), (8, 24)),
}

Shape = Callable[[np.random.Generator, np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray, float]]


def _bevel(d: np.ndarray, width: float) -> np.ndarray:
    """0 outside (d < 0), rising smoothly to 1 over ``width`` pixels inside."""
    return np.sqrt(np.clip(d / width, 0, 1))


def _box(lx: np.ndarray, ly: np.ndarray, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    """Signed distance (pixels, positive inside) to an axis-aligned box in local coordinates."""
    return np.minimum(np.minimum(lx - x0, x1 - lx), np.minimum(ly - y0, y1 - ly))


# --- shapes: height (mm), albedo (H×W×3 in 0..1) and specular strength -----------------------


def _bracket(rng: np.random.Generator, lx: np.ndarray, ly: np.ndarray, s: int) -> tuple[np.ndarray, np.ndarray, float]:
    d = np.maximum(
        _box(lx, ly, -0.30 * s, 0.30 * s, 0.05 * s, 0.20 * s), _box(lx, ly, -0.30 * s, -0.15 * s, -0.25 * s, 0.20 * s)
    )
    for hx, hy in ((0.18, 0.125), (-0.225, -0.15)):
        d = np.minimum(d, np.hypot(lx - hx * s, ly - hy * s) - 0.03 * s)
    h = 3.0 * _bevel(d, 3.0)
    brushed = _sample(_noise(rng, (2 * s, 2 * s), (0.7, 14.0)), ly, lx)
    albedo = (np.array([0.55, 0.57, 0.60]) + rng.normal(0, 0.01, 3)) * (1 + 0.06 * brushed[..., None])
    return h, albedo, 0.2


def _gear(rng: np.random.Generator, lx: np.ndarray, ly: np.ndarray, s: int) -> tuple[np.ndarray, np.ndarray, float]:
    r, th = np.hypot(lx, ly), np.arctan2(ly, lx)
    edge = 0.26 * s + 0.03 * s * np.clip(2.2 * np.sin(16 * th), -1, 1)
    d = np.minimum(edge - r, r - 0.08 * s)
    keyway = (np.abs(ly) < 0.018 * s) & (lx > 0) & (r < 0.11 * s)  # breaks the rotational symmetry
    h = 4.0 * _bevel(d, 2.5) * ~keyway + 1.0 * (r < 0.2 * s) * (r > 0.08 * s) * _bevel(0.2 * s - r, 3.0)
    colour = np.array([0.80, 0.78, 0.72]) * rng.uniform(0.95, 1.05)  # nylon, slightly varying
    albedo = colour * (1 + 0.03 * _sample(_noise(rng, (2 * s, 2 * s), 2.0), ly, lx)[..., None])
    return h, albedo, 0.15


def _potato(rng: np.random.Generator, lx: np.ndarray, ly: np.ndarray, s: int) -> tuple[np.ndarray, np.ndarray, float]:
    a, b = 0.30 * s * rng.uniform(0.85, 1.1), 0.20 * s * rng.uniform(0.85, 1.1)
    th = np.arctan2(ly, lx)
    wobble = 1 + sum(rng.normal(0, 0.04) * np.cos(k * th + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5))
    q = np.hypot(lx / a, ly / b) / wobble
    h = 14.0 * rng.uniform(0.85, 1.15) * np.sqrt(np.clip(1 - q**2, 0, None))
    h = h + 0.15 * _sample(_noise(rng, (2 * s, 2 * s), 6.0), ly, lx) * (q < 1)
    skin = _sample(_noise(rng, (2 * s, 2 * s), 1.5), ly, lx)
    spots = _sample(_noise(rng, (2 * s, 2 * s), 3.0), ly, lx) > 2.2
    base = np.array([0.78, 0.62, 0.38]) * rng.uniform(0.85, 1.1, 3)  # varies from potato to potato
    albedo = base * (1 + 0.08 * skin[..., None])
    albedo = np.where(spots[..., None], albedo * 0.6, albedo)
    return h, albedo, 0.05


def _cookie(rng: np.random.Generator, lx: np.ndarray, ly: np.ndarray, s: int) -> tuple[np.ndarray, np.ndarray, float]:
    th = np.arctan2(ly, lx)
    edge = 0.29 * s * (1 + 0.03 * np.sin(7 * th + rng.uniform(0, 6.3)) + 0.02 * np.sin(3 * th + rng.uniform(0, 6.3)))
    d = edge - np.hypot(lx, ly)
    rough = _sample(_noise(rng, (2 * s, 2 * s), 2.5), ly, lx)
    h = (5.0 + 0.4 * rough) * _bevel(d, 8.0)
    bake = rng.uniform(0.85, 1.1)  # how long it baked: colour varies between good cookies
    albedo = np.array([0.85, 0.62, 0.35]) * bake * (1 + 0.07 * rough[..., None])
    for _ in range(int(rng.integers(6, 14))):  # chocolate chips: a different layout every cookie
        rr, aa = 0.22 * s * np.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
        chip = np.hypot(lx - rr * np.cos(aa), ly - rr * np.sin(aa)) < rng.uniform(0.015, 0.03) * s
        albedo = np.where(chip[..., None], np.array([0.25, 0.15, 0.10]), albedo)
        h = h + 0.6 * chip * (d > 0)
    return h, albedo, 0.03


def _connector(
    rng: np.random.Generator, lx: np.ndarray, ly: np.ndarray, s: int
) -> tuple[np.ndarray, np.ndarray, float]:
    body = _box(lx, ly, -0.26 * s, 0.26 * s, -0.15 * s, 0.15 * s)
    latch = _box(lx, ly, -0.08 * s, 0.08 * s, 0.15 * s - 4, 0.21 * s)  # on one side only
    h = 6.0 * _bevel(body, 2.0) + 3.0 * _bevel(latch, 2.0) * (body <= 0)
    for i in range(6):  # pin sockets: square holes 2 mm deep
        hole = _box(lx, ly, (-0.2 + 0.08 * i) * s - 0.02 * s, (-0.2 + 0.08 * i) * s + 0.02 * s, -0.05 * s, 0.0 * s) > 0
        h = h - 2.0 * hole
    albedo = (
        np.full(lx.shape + (3,), 0.16)
        * rng.uniform(0.95, 1.05)
        * (1 + 0.05 * _sample(_noise(rng, (2 * s, 2 * s), 1.0), ly, lx)[..., None])
    )
    marker = (_box(lx, ly, 0.17 * s, 0.23 * s, 0.06 * s, 0.12 * s) > 0) & (
        lx - 0.17 * s > ly - 0.06 * s
    )  # printed triangle
    albedo = np.where(marker[..., None], np.array([0.9, 0.9, 0.88]), albedo)
    return h, albedo, 0.25


def _plate(rng: np.random.Generator, lx: np.ndarray, ly: np.ndarray, s: int) -> tuple[np.ndarray, np.ndarray, float]:
    d = _box(lx, ly, -0.28 * s, 0.28 * s, -0.20 * s, 0.20 * s)
    boss = np.hypot(lx - 0.12 * s, ly + 0.06 * s)
    h = 2.5 * _bevel(d, 4.0) + 3.0 * _bevel(0.07 * s - boss, 3.0)
    freq, phase = rng.uniform(0.15, 0.3), rng.uniform(0, 2 * np.pi)  # wood grain: its own pattern per plate
    warp = 6.0 * _sample(_noise(rng, (2 * s, 2 * s), 12.0), ly, lx)
    grain = np.sin(freq * (ly + warp) + phase)
    albedo = np.array([0.72, 0.52, 0.32]) * rng.uniform(0.9, 1.1) * (1 + 0.12 * grain[..., None])
    label = _box(lx, ly, -0.22 * s, -0.02 * s, 0.04 * s, 0.15 * s) > 0
    albedo = np.where(label[..., None], np.array([0.92, 0.92, 0.86]), albedo)
    stripe = label & (np.abs(ly - 0.095 * s) < 0.012 * s)
    albedo = np.where(stripe[..., None], np.array([0.15, 0.3, 0.65]), albedo)
    return h, albedo, 0.05


SHAPES: dict[str, Shape] = {
    "bracket": _bracket,
    "gear": _gear,
    "potato": _potato,
    "cookie": _cookie,
    "connector": _connector,
    "plate": _plate,
}


# --- defects: change height (mm) and albedo in place, return the exact mask -------------------


def _site(rng: np.random.Generator, top: np.ndarray, margin: float) -> tuple[int, int]:
    """A defect centre on the part's top surface, ``margin`` pixels from its edges."""
    inner = ndimage.binary_erosion(top, iterations=max(1, int(margin)))
    ys, xs = np.nonzero(inner if inner.any() else top)
    i = rng.integers(len(ys))
    return int(ys[i]), int(xs[i])


def _apply_defect(
    rng: np.random.Generator, kind: str, h: np.ndarray, albedo: np.ndarray, fg: np.ndarray, sizes: DefectSizes
) -> np.ndarray:
    s = h.shape[0]
    top = fg & (ndimage.gaussian_filter(h, 1.0) > 0.5 * h[fg].max()) if fg.any() else fg
    area = fg.sum() * 10 ** rng.uniform(*np.log10(sizes.area))
    yy, xx = np.mgrid[:s, :s]
    if kind in ("dent", "bump", "stain", "contamination"):
        radius = np.sqrt(area / np.pi)
        cy, cx = _site(rng, top, radius + 3)
        r = np.hypot(yy - cy, xx - cx)
        if kind in ("dent", "bump"):
            depth = rng.uniform(*sizes.depth) * NOISE_MM * (-1 if kind == "dent" else 1)
            support = r < radius
            h += depth * 0.5 * (1 + np.cos(np.pi * np.clip(r / radius, 0, 1))) * support
            return ndimage.binary_dilation(support)  # the shading of the changed slope reaches one pixel out
        blob = (r / radius + 0.3 * _noise(rng, (s, s), max(radius / 2, 1.0)) < 1.0) & fg
        if kind == "stain":  # darker or tinted, geometry untouched
            albedo[blob] *= 1 - rng.uniform(*sizes.stain) * rng.uniform(0.6, 1.0, 3)
            return blob
        albedo[blob] = rng.choice(
            [
                np.array([0.2, 0.3, 0.7]),
                np.array([0.08, 0.08, 0.08]),
                np.array([0.9, 0.9, 0.9]),
                np.array([0.6, 0.2, 0.2]),
            ]
        )
        h += (
            rng.uniform(*sizes.particle)
            * NOISE_MM
            * ndimage.gaussian_filter(blob.astype(float), 1.0)
            * (ndimage.binary_dilation(blob, iterations=3))
        )
        return ndimage.binary_dilation(blob, iterations=4)
    if kind == "scratch":
        width = rng.uniform(*sizes.scratch_width)
        length = float(np.clip(area / width, 10, 0.35 * s))
        cy, cx = _site(rng, top, 4)
        heading = rng.uniform(0, np.pi)
        t = np.arange(-length / 2, length / 2, 0.5)
        bend = rng.normal(0, 0.002) * t**2
        py, px = cy + t * np.sin(heading) + bend * np.cos(heading), cx + t * np.cos(heading) - bend * np.sin(heading)
        line = np.zeros((s, s), bool)
        ok = (py >= 0) & (py < s) & (px >= 0) & (px < s)
        line[py[ok].astype(int), px[ok].astype(int)] = True
        groove = (ndimage.distance_transform_edt(~line) < width / 2) & top
        h -= rng.uniform(*sizes.scratch_depth) * NOISE_MM * groove
        albedo[groove] *= rng.uniform(1.15, 1.35) if albedo[groove].mean() < 0.5 else rng.uniform(0.65, 0.8)
        return ndimage.binary_dilation(groove)
    raise ValueError(f"unknown defect {kind!r} (known: {', '.join(REALISTIC_DEFECTS)})")


# --- rendering -------------------------------------------------------------------------------


def _light(rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    """Direction, ambient and direct share: from coaxial (elevation ~90°) to raking (~20°)."""
    elev = np.deg2rad(rng.choice([rng.uniform(78, 90), rng.uniform(45, 78), rng.uniform(18, 45)], p=[0.4, 0.35, 0.25]))
    azim = rng.uniform(0, 2 * np.pi)
    ambient = rng.uniform(0.2, 0.45)
    return np.array([np.cos(elev) * np.cos(azim), np.cos(elev) * np.sin(azim), np.sin(elev)]), ambient, 1 - ambient


def render_realistic(
    category: str, key: Sequence[int] | int, defect: str = "good", size: int = REALISTIC_SIZE, level: str = "hard"
) -> Part:
    """Render one part; ``key`` seeds everything but the defect, so a defect's good twin shares it.
    ``level`` sizes the defect (:data:`LEVELS`)."""
    if level not in LEVELS:
        raise ValueError(f"unknown defect level {level!r} (known: {', '.join(LEVELS)})")
    if category not in SHAPES:
        raise ValueError(f"unknown category {category!r} (known: {', '.join(REALISTIC_CATEGORIES)})")
    if defect != "good" and defect not in REALISTIC_DEFECTS:
        raise ValueError(f"unknown defect {defect!r} (known: {', '.join(REALISTIC_DEFECTS)})")
    rng = np.random.default_rng(key)
    drng = np.random.default_rng([*np.atleast_1d(key).tolist(), 7919])
    s = size
    yy, xx = np.mgrid[:s, :s].astype(np.float64)
    cy, cx = s / 2 + rng.uniform(-0.05, 0.05, 2) * s
    theta = rng.uniform(0, 2 * np.pi)
    c, si = np.cos(theta), np.sin(theta)
    lx, ly = c * (xx - cx) + si * (yy - cy), -si * (xx - cx) + c * (yy - cy)
    h, albedo, specular = SHAPES[category](rng, lx, ly, s)
    fg = h > 0.2
    bg = np.array([0.22, 0.24, 0.25]) * (1 + 0.05 * _noise(rng, (s, s), 1.5))[..., None]  # conveyor belt
    light, ambient, direct = _light(rng)
    gain, balance = rng.uniform(0.85, 1.15), rng.uniform(0.96, 1.04, 3)
    tilt = np.deg2rad(rng.uniform(-4, 4, 2))
    depth_noise, rgb_noise, dropout = rng.standard_normal((s, s)), rng.standard_normal((s, s, 3)), rng.random((s, s))
    blobs = [(rng.integers(0, s, 2), rng.uniform(2, 10)) for _ in range(int(rng.integers(0, 5)))]

    mask = np.zeros((s, s), bool)
    shadow = np.roll(h, 3, axis=1) - h > 0.8  # the projector sits to one side: tall edges shadow what lies behind
    if defect != "good":
        mask = _apply_defect(drng, defect, h, albedo, fg, LEVELS[level])
    albedo = np.where(fg[..., None], albedo, bg)

    gy, gx = np.gradient(h, PITCH_MM)
    normal = np.dstack([-gx, -gy, np.ones_like(h)])
    normal /= np.linalg.norm(normal, axis=2, keepdims=True)
    half = (light + np.array([0, 0, 1.0])) / np.linalg.norm(light + np.array([0, 0, 1.0]))
    shade = ambient + direct * np.clip(normal @ light, 0, None)
    shine = specular * np.clip(normal @ half, 0, None) ** 30 * fg
    rgb = (albedo * shade[..., None] + shine[..., None]) * gain * balance + 0.012 * rgb_noise
    rgb8 = (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)

    # Perspective camera over a tilted support plane; depth noise grows with z² and with slope.
    u, v = (xx - s / 2) / FOCAL_PX, (yy - s / 2) / FOCAL_PX
    z_plane = DISTANCE_M / (1 - np.tan(tilt[0]) * u - np.tan(tilt[1]) * v)
    slope = np.hypot(gx, gy)
    z = z_plane - h / 1000.0
    z = z + depth_noise * NOISE_MM / 1000.0 * (z / DISTANCE_M) ** 2 * (1 + 0.5 * np.minimum(slope, 4))
    xyz = np.dstack([u * z, v * z, z]).astype(np.float32)
    missing = ((slope > 1.2) & (dropout < 0.6)) | (shadow & (dropout < 0.9))
    for (by, bx), br in blobs:
        missing |= np.hypot(yy - by, xx - bx) < br
    xyz[missing] = 0.0
    return Part(rgb=rgb8, xyz=xyz, mask=mask, category=category, defect=defect)
