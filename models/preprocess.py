"""Geometry and image preprocessing shared by the feature-based methods.

As the anchors (BTF, M3DM, CFM) do, configurable: a RANSAC plane fitted to the image
border removes the background, an optional largest-cluster filter drops stray points,
the frame is padded to a square (RGB by edge replication, XYZ with zeros = missing)
and resized to the model resolution (bicubic RGB, nearest XYZ). Thresholds are scale
aware (multiples of the cloud's own point spacing and noise), so the same defaults work
for clouds in metres or millimetres, at any sensor resolution.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from .components import valid_mask


@dataclass(frozen=True)
class PreprocessConfig:
    resolution: int = 224
    remove_plane: bool = True
    border: int = 10  # pixels of image border that see the background plane
    plane_k: float = 4.0  # inlier distance = plane_k × robust noise of the border points...
    plane_min_pitch: float = 1.5  # ...but at least this many point spacings
    ransac_iters: int = 200
    largest_cluster: bool = False  # DBSCAN largest-cluster filter (open3d); slow on big clouds
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Prepared:
    """A frame at model resolution, plus what is needed to map results back."""

    rgb: np.ndarray  # R×R×3 uint8
    xyz: np.ndarray  # R×R×3 float32, zeros = missing / background
    valid: np.ndarray  # R×R bool (foreground points)
    orig_shape: tuple[int, int]  # H, W of the frame
    pad: tuple[int, int]  # (top, left) padding added before resizing
    plane: np.ndarray | None = None  # background plane (unit normal, offset) when one was found


def point_pitch(xyz: np.ndarray, valid: np.ndarray) -> float:
    """Median distance between horizontally adjacent valid points (the cloud's own scale)."""
    both = valid[:, 1:] & valid[:, :-1]
    if not both.any():
        return 0.0
    d = np.linalg.norm(xyz[:, 1:][both] - xyz[:, :-1][both], axis=1)
    return float(np.median(d))


def ransac_border_plane(xyz: np.ndarray, valid: np.ndarray, cfg: PreprocessConfig) -> tuple[np.ndarray, float] | None:
    """Plane (unit normal n, offset d with n·p + d = 0) through the border points, and its inlier distance."""
    b = cfg.border
    ring = np.zeros_like(valid)
    ring[:b], ring[-b:], ring[:, :b], ring[:, -b:] = True, True, True, True
    pts = xyz[ring & valid].astype(np.float64)
    if len(pts) < 20:
        return None
    rng = np.random.default_rng(cfg.seed)
    pitch = point_pitch(xyz, valid)
    coarse = max(3 * pitch, 1e-9)
    # All hypotheses at once: one at a time (with a permutation per draw) was half a worker's batch time.
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
    # hypotheses are ranked on at most 2,000 border points; the winner is refined on all of them
    judge = pts if len(pts) <= 2000 else pts[rng.choice(len(pts), 2000, replace=False)]
    counts = (np.abs(judge @ normals.T + offsets) < coarse).sum(0)
    counts[~ok] = -1
    k = int(np.argmax(counts))  # first best, as the sequential loop kept
    n, d = normals[k], offsets[k]
    inliers = pts[np.abs(pts @ n + d) < coarse]
    # least-squares refinement on the inliers (SVD of centred points)
    centre = inliers.mean(0)
    n = np.linalg.svd(inliers - centre, full_matrices=False)[2][-1]
    d = -n @ centre
    resid = np.abs(inliers @ n + d)
    noise = 1.4826 * np.median(resid)
    return np.array([*n, d]), max(cfg.plane_k * noise, cfg.plane_min_pitch * pitch)


def remove_background(xyz: np.ndarray, cfg: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """Zero the background plane's points (and stray clusters); returns (xyz, foreground)."""
    xyz, valid, _ = remove_background_plane(xyz, cfg)
    return xyz, valid


def remove_background_plane(xyz: np.ndarray, cfg: PreprocessConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """:func:`remove_background`, also returning the plane it removed (None if none)."""
    valid = valid_mask(xyz)
    xyz = xyz.copy()
    plane = None
    if cfg.remove_plane:
        fit = ransac_border_plane(xyz, valid, cfg)
        if fit is not None:
            plane, dist = fit
            on_plane = np.abs(xyz @ plane[:3] + plane[3]) < dist
            valid &= ~on_plane
    if cfg.largest_cluster and valid.sum() > 30:
        valid &= _largest_cluster(xyz, valid)
    xyz[~valid] = 0.0
    return xyz, valid, plane


def _largest_cluster(xyz: np.ndarray, valid: np.ndarray) -> np.ndarray:
    import open3d as o3d

    pts = xyz[valid].astype(np.float64)
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    # Neighbours on steep flanks are further apart than the median spacing: take the wider of both.
    both = valid[:, 1:] & valid[:, :-1]
    steps = np.linalg.norm(xyz[:, 1:][both] - xyz[:, :-1][both], axis=1)
    eps = max(4 * float(np.median(steps)), 2 * float(np.percentile(steps, 95))) if len(steps) else 1e-3
    labels = np.asarray(pcd.cluster_dbscan(eps=eps, min_points=10))
    keep = np.zeros_like(valid)
    if (labels >= 0).any():
        keep[valid] = labels == np.bincount(labels[labels >= 0]).argmax()
    return keep


def prepare(rgb: np.ndarray, xyz: np.ndarray, cfg: PreprocessConfig) -> Prepared:
    h, w = rgb.shape[:2]
    xyz, _, plane = remove_background_plane(xyz, cfg)
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    pad = ((top, side - h - top), (left, side - w - left), (0, 0))
    rgb_sq = np.pad(rgb, pad, mode="edge")
    xyz_sq = np.pad(xyz, pad, mode="constant")
    r = cfg.resolution
    rgb_r = np.asarray(Image.fromarray(rgb_sq).resize((r, r), Image.BICUBIC))
    idx = (np.arange(r) * side / r + side / (2 * r)).astype(int).clip(0, side - 1)  # nearest
    xyz_r = xyz_sq[idx][:, idx]
    return Prepared(rgb_r, np.ascontiguousarray(xyz_r), valid_mask(xyz_r), (h, w), (top, left), plane)


def to_frame_resolution(grid_map: np.ndarray, prep: Prepared) -> np.ndarray:
    """Map an R×R (or any square) model-resolution map back onto the frame's H×W pixels."""
    h, w = prep.orig_shape
    side = max(h, w)
    sq = np.asarray(Image.fromarray(grid_map.astype(np.float32)).resize((side, side), Image.BILINEAR))
    top, left = prep.pad
    return np.ascontiguousarray(sq[top : top + h, left : left + w])
