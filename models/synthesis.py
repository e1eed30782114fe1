"""Synthetic anomalies for training on good parts only (BridgeNet's generators; reusable by any method).

* :class:`UnifiedTextureGenerator` — a Perlin-noise mask on the part, filled with a procedural texture
  or a shifted patch of another good frame, blended into RGB only, depth only, or both (the same mask
  for both, so the anomaly is consistent across modalities). The reference blends DTD textures; that
  dataset cannot be downloaded here and is not needed: procedural textures and other good frames give
  the same "foreign surface" signal.
* :class:`MultiScaleGaussianGenerator` — Gaussian perturbations at several scales: bumps and dents in
  the depth image, and noise added to feature maps inside a mask (GLASS-style feature anomalies).

Images here are R×R×3 uint8 RGB and R×R float depth in [0, 1] (see :mod:`models.visible_depth`);
masks are R×R bool. Everything takes a ``numpy.random.Generator`` so runs are reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from .textures import photo_texture

TARGETS = ("rgb", "depth", "both")


def perlin(shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """2D gradient (Perlin) noise with ``res`` lattice cells per axis, roughly in [-1, 1]."""
    h, w = shape
    cy, cx = math.ceil(h / res[0]), math.ceil(w / res[1])
    angles = 2 * np.pi * rng.random((res[0] + 1, res[1] + 1))
    gy, gx = np.sin(angles), np.cos(angles)
    y = np.arange(res[0] * cy) / cy
    x = np.arange(res[1] * cx) / cx
    yi, xi = np.floor(y).astype(int)[:, None], np.floor(x).astype(int)[None, :]
    fy, fx = (y % 1)[:, None], (x % 1)[None, :]

    def corner(dy: int, dx: int) -> np.ndarray:
        return gy[yi + dy, xi + dx] * (fy - dy) + gx[yi + dy, xi + dx] * (fx - dx)

    fade = lambda t: t * t * t * (t * (t * 6 - 15) + 10)  # noqa: E731
    u, v = fade(fx), fade(fy)
    top = corner(0, 0) * (1 - u) + corner(0, 1) * u
    bottom = corner(1, 0) * (1 - u) + corner(1, 1) * u
    return (np.sqrt(2) * (top * (1 - v) + bottom * v))[:h, :w]


def perlin_mask(
    region: np.ndarray, rng: np.random.Generator, min_share: float = 0.005, max_share: float = 0.25, tries: int = 20
) -> np.ndarray:
    """A blob-shaped mask inside ``region`` (the part), from thresholded Perlin noise at a random
    scale, covering between ``min_share`` and ``max_share`` of the region. Empty if the region is."""
    h, w = region.shape
    area = region.sum()
    if area == 0:
        return np.zeros_like(region)
    for _ in range(tries):
        scale = 2 ** int(rng.integers(1, 5))  # 2..16 lattice cells: coarse to fine blobs
        noise = perlin((h, w), (scale, scale), rng)
        mask = (noise > rng.uniform(0.3, 0.6)) & region
        if min_share * area <= mask.sum() <= max_share * area:
            return mask
    # fall back to one disc inside the region
    ys, xs = np.nonzero(region)
    k = int(rng.integers(len(ys)))
    r = max(2.0, np.sqrt(min_share * area * 4 / np.pi))
    yy, xx = np.ogrid[:h, :w]
    return ((yy - ys[k]) ** 2 + (xx - xs[k]) ** 2 <= r * r) & region


def procedural_texture(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """An H×W×3 float texture in [0, 1]: coloured fractal noise, stripes, a checkerboard or speckle."""
    h, w = shape
    kind = int(rng.integers(4))
    colours = rng.random((2, 3))
    if kind == 0:  # fractal noise, two colours
        t = sum(perlin(shape, (2**o, 2**o), rng) / 2**o for o in range(1, 5))
        t = (t - t.min()) / max(np.ptp(t), 1e-9)
    elif kind == 1:  # stripes at a random angle and period
        a, period = rng.uniform(0, np.pi), rng.uniform(3, 16)
        yy, xx = np.mgrid[:h, :w]
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(a) + yy * np.sin(a)) / period)
    elif kind == 2:  # checkerboard
        s = int(rng.integers(3, 12))
        yy, xx = np.mgrid[:h, :w]
        t = ((yy // s + xx // s) % 2).astype(np.float64)
    else:  # speckle
        t = ndimage.gaussian_filter(rng.random(shape), rng.uniform(0.5, 2.0))
        t = (t - t.min()) / max(np.ptp(t), 1e-9)
    return (colours[0] * (1 - t[..., None]) + colours[1] * t[..., None]).astype(np.float32)


@dataclass
class SyntheticAnomaly:
    rgb: np.ndarray  # R×R×3 uint8
    depth: np.ndarray  # R×R float32 in [0, 1]
    mask: np.ndarray  # R×R bool: where the anomaly is
    changed: tuple[str, ...]  # which modalities were altered: "rgb", "depth"
    kind: str


FILLS = ("procedural", "photo", "both")


class UnifiedTextureGenerator:
    """Perlin-masked foreign texture in RGB, depth or both (same mask), blended with β ~ N(0.5, 0.3) in [0.2, 0.8].

    The fill is a shifted patch of another good frame (``donor_share`` of the time, when donors are given),
    else a texture of the ``fill`` family: ``procedural`` (noise, stripes, checkerboard, speckle), ``photo``
    (a crop of a real photograph shipped in a wheel, :mod:`models.textures`) or ``both`` (half each)."""

    def __init__(self, donor_share: float = 0.5, fill: str = "both") -> None:
        if fill not in FILLS:
            raise ValueError(f"fill must be one of {FILLS}, not {fill!r}")
        self.donor_share = donor_share
        self.fill = fill

    def _texture(self, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        if self.fill == "photo" or (self.fill == "both" and rng.random() < 0.5):
            photo = photo_texture(shape, rng)
            if photo is not None:
                return photo
        return procedural_texture(shape, rng)

    def __call__(
        self,
        rgb: np.ndarray,
        depth: np.ndarray,
        region: np.ndarray,
        rng: np.random.Generator,
        donors: Sequence[tuple[np.ndarray, np.ndarray]] = (),
        target: str | None = None,
    ) -> SyntheticAnomaly:
        target = target or TARGETS[int(rng.integers(3))]
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}")
        mask = perlin_mask(region, rng)
        h, w = mask.shape
        if donors and rng.random() < self.donor_share:
            d_rgb, d_depth = donors[int(rng.integers(len(donors)))]
            shift = (int(rng.integers(h)), int(rng.integers(w)))  # a different place on another part
            src_rgb = np.roll(d_rgb, shift, axis=(0, 1)).astype(np.float32) / 255
            src_depth = np.roll(d_depth, shift, axis=(0, 1))
        else:
            src_rgb = self._texture((h, w), rng)
            src_depth = self._texture((h, w), rng).mean(2)
        beta = float(np.clip(rng.normal(0.5, 0.3), 0.2, 0.8))
        out_rgb, out_depth = rgb.copy(), depth.copy()
        changed: tuple[str, ...] = ()
        if target in ("rgb", "both"):
            blend = (1 - beta) * rgb.astype(np.float32) / 255 + beta * src_rgb
            out_rgb[mask] = (blend[mask] * 255).round().clip(0, 255).astype(np.uint8)
            changed += ("rgb",)
        if target in ("depth", "both"):
            out_depth[mask] = ((1 - beta) * depth + beta * src_depth)[mask].clip(0, 1)
            changed += ("depth",)
        return SyntheticAnomaly(out_rgb, out_depth.astype(np.float32), mask, changed, "texture")


class MultiScaleGaussianGenerator:
    """Gaussian anomalies at several scales: depth bumps/dents, and masked feature noise."""

    def __init__(
        self, blob_scales: Sequence[float] = (0.02, 0.04, 0.08), feature_sigmas: Sequence[float] = (0.6, 0.2, 0.1)
    ) -> None:
        self.blob_scales = tuple(blob_scales)  # blob σ as a share of the image side
        self.feature_sigmas = tuple(
            feature_sigmas
        )  # noise σ in standardised feature units (6×, 2×, 1× a base, as the reference)

    def depth(
        self, rgb: np.ndarray, depth: np.ndarray, region: np.ndarray, rng: np.random.Generator
    ) -> SyntheticAnomaly:
        """One to three Gaussian bumps or dents on the part; the mask is where the height moved by
        more than a tenth of the largest change."""
        h, w = depth.shape
        ys, xs = np.nonzero(region)
        delta = np.zeros((h, w), np.float32)
        if len(ys):
            yy, xx = np.mgrid[:h, :w]
            for _ in range(int(rng.integers(1, 4))):
                k = int(rng.integers(len(ys)))
                s = rng.choice(self.blob_scales) * max(h, w)
                amp = rng.uniform(0.15, 0.4) * rng.choice([-1.0, 1.0])
                delta += amp * np.exp(-((yy - ys[k]) ** 2 + (xx - xs[k]) ** 2) / (2 * s * s)).astype(np.float32)
        delta *= region
        mask = np.abs(delta) > 0.1 * np.abs(delta).max() if np.abs(delta).max() > 0 else np.zeros((h, w), bool)
        out = np.where(region, (depth + delta).clip(0, 1), depth).astype(np.float32)
        return SyntheticAnomaly(rgb.copy(), out, mask, ("depth",), "gaussian")

    def features(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Add Gaussian noise (σ drawn per sample from ``feature_sigmas``) inside a random blob mask per
        sample of a B×C×G×G batch; returns (noisy features, B×G×G float target mask)."""
        b, _, g, _ = x.shape
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        masks = (
            torch.from_numpy(np.stack([perlin_mask(np.ones((g, g), bool), rng, 0.02, 0.3) for _ in range(b)]))
            .float()
            .to(x.device)
        )
        sigma = torch.tensor([rng.choice(self.feature_sigmas) for _ in range(b)], dtype=x.dtype, device=x.device).view(
            b, 1, 1, 1
        )
        noise = torch.randn(x.shape, generator=generator, device="cpu").to(x.device) * sigma
        return x + noise * masks[:, None], masks
