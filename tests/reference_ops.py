"""The per-frame NumPy/SciPy/PIL implementations the batched tensor operations replaced, kept as the reference
they are tested against (tests/test_batched_ops.py): one frame at a time, as the code was before."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from duoscan.models.components import fill_invalid
from duoscan.models.preprocess import Prepared, PreprocessConfig


def valid_mask(xyz: np.ndarray) -> np.ndarray:
    return np.any(xyz != 0, axis=2)


def point_pitch(xyz: np.ndarray, valid: np.ndarray) -> float:
    both = valid[:, 1:] & valid[:, :-1]
    if not both.any():
        return 0.0
    return float(np.median(np.linalg.norm(xyz[:, 1:][both] - xyz[:, :-1][both], axis=1)))


def ransac_border_plane(xyz: np.ndarray, valid: np.ndarray, cfg: PreprocessConfig):
    b = cfg.border
    ring = np.zeros_like(valid)
    ring[:b], ring[-b:], ring[:, :b], ring[:, -b:] = True, True, True, True
    pts = xyz[ring & valid].astype(np.float64)
    if len(pts) < 20:
        return None
    rng = np.random.default_rng(cfg.seed)
    pitch = point_pitch(xyz, valid)
    coarse = max(3 * pitch, 1e-9)
    picks = rng.integers(0, len(pts), (cfg.ransac_iters, 3))
    picks = picks[(picks[:, 0] != picks[:, 1]) & (picks[:, 1] != picks[:, 2]) & (picks[:, 0] != picks[:, 2])]
    if not len(picks):
        return None
    p0, p1, p2 = pts[picks[:, 0]], pts[picks[:, 1]], pts[picks[:, 2]]
    normals = np.cross(p1 - p0, p2 - p0)
    norms = np.linalg.norm(normals, axis=1)
    ok = norms >= 1e-12
    if not ok.any():
        return None
    normals = normals / np.where(ok, norms, 1.0)[:, None]
    offsets = -np.einsum("ij,ij->i", normals, p0)
    judge = pts if len(pts) <= 2000 else pts[rng.choice(len(pts), 2000, replace=False)]
    counts = (np.abs(judge @ normals.T + offsets) < coarse).sum(0)
    counts[~ok] = -1
    k = int(np.argmax(counts))
    n, d = normals[k], offsets[k]
    inliers = pts[np.abs(pts @ n + d) < coarse]
    centre = inliers.mean(0)
    n = np.linalg.svd(inliers - centre, full_matrices=False)[2][-1]
    d = -n @ centre
    noise = 1.4826 * np.median(np.abs(inliers @ n + d))
    return np.array([*n, d]), max(cfg.plane_k * noise, cfg.plane_min_pitch * pitch)


def prepare(rgb: np.ndarray, xyz: np.ndarray, cfg: PreprocessConfig) -> Prepared:
    h, w = rgb.shape[:2]
    valid = valid_mask(xyz)
    xyz = xyz.copy()
    plane = None
    fit = ransac_border_plane(xyz, valid, cfg) if cfg.remove_plane else None
    if fit is not None:
        plane, dist = fit
        valid &= ~(np.abs(xyz @ plane[:3] + plane[3]) < dist)
    xyz[~valid] = 0.0
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    pad = ((top, side - h - top), (left, side - w - left), (0, 0))
    rgb_sq, xyz_sq = np.pad(rgb, pad, mode="edge"), np.pad(xyz, pad, mode="constant")
    r = cfg.resolution
    rgb_r = np.asarray(Image.fromarray(rgb_sq).resize((r, r), Image.BICUBIC))
    idx = (np.arange(r) * side / r + side / (2 * r)).astype(int).clip(0, side - 1)
    xyz_r = xyz_sq[idx][:, idx]
    return Prepared(rgb_r, np.ascontiguousarray(xyz_r), valid_mask(xyz_r), (h, w), (top, left), plane)


def to_frame_resolution(grid_map: np.ndarray, prep: Prepared) -> np.ndarray:
    h, w = prep.orig_shape
    side = max(h, w)
    sq = np.asarray(Image.fromarray(grid_map.astype(np.float32)).resize((side, side), Image.BILINEAR))
    top, left = prep.pad
    return np.ascontiguousarray(sq[top : top + h, left : left + w])


def geometry_dense(p: Prepared) -> np.ndarray:
    r = p.valid.shape[0]
    pitch = max(point_pitch(p.xyz, p.valid), 1e-9)
    z = fill_invalid(p.xyz[..., 2].astype(np.float64), p.valid) / pitch if p.valid.any() else np.zeros((r, r))
    s1, s2, s4 = (ndimage.gaussian_filter(z, s) for s in (1.0, 2.0, 4.0))
    gy, gx = np.gradient(s2)
    return np.stack([s1 - s2, s2 - s4, np.hypot(gx, gy)], axis=-1).astype(np.float32) * p.valid[..., None]


def cell_average(dense: np.ndarray, valid: np.ndarray, grid: int, min_cell_valid: float):
    g, r = grid, valid.shape[0]
    k = r // g
    cells = dense[: g * k, : g * k].reshape(g, k, g, k, -1).sum(axis=(1, 3))
    counts = valid[: g * k, : g * k].reshape(g, k, g, k).sum(axis=(1, 3)).astype(np.float32)
    ok = counts >= min_cell_valid * k * k
    feats = np.where(ok[..., None], cells / np.maximum(counts, 1)[..., None], 0.0).astype(np.float32)
    return feats.transpose(2, 0, 1), ok.astype(np.float32)


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Two 1-D convolutions with replicated edges."""
    radius = max(1, int(round(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=maps.dtype)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    k = k / k.sum()
    m = F.conv2d(F.pad(maps[:, None], (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    m = F.conv2d(F.pad(m, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1))
    return m[:, 0]


def largest_region(pixel_map: np.ndarray, threshold: float):
    labels, n = ndimage.label(pixel_map > threshold)
    if n == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    best = int(np.argmax(sizes)) + 1
    ys, xs = np.nonzero(labels == best)
    return int(sizes[best - 1]), (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))


def part_region(valid: np.ndarray) -> np.ndarray:
    if not valid.any():
        return valid.copy()
    return ndimage.binary_fill_holes(ndimage.binary_closing(valid, iterations=2)) | valid
