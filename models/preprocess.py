"""Geometry and image preprocessing shared by the feature-based methods.

As the anchors (BTF, M3DM, CFM) do, configurable: a RANSAC plane fitted to the image
border removes the background, an optional largest-cluster filter drops stray points,
the frame is padded to a square (RGB by edge replication, XYZ with zeros = missing)
and resized to the model resolution (bicubic RGB, nearest XYZ). Thresholds are scale
aware (multiples of the cloud's own point spacing and noise), so the same defaults work
for clouds in metres or millimetres, at any sensor resolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


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


def masked_median(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per row of B×N ``values``, the median of the entries where ``mask`` holds (NumPy's: the mean of the two
    middle ones for an even count); NaN for a row with none. Selection, not a sort: ~O(N) per row."""
    counts = mask.sum(1).tolist()
    filled = torch.where(mask, values, torch.full_like(values, torch.inf))
    out = torch.full((len(values),), torch.nan, dtype=values.dtype, device=values.device)
    for i, n in enumerate(counts):
        if n:
            row = filled[i]
            lo = row.kthvalue((n - 1) // 2 + 1).values
            if n % 2 == 0:  # the next order statistic without a second selection: lo again, or the least above it
                hi = lo if int((row <= lo).sum()) > n // 2 else torch.where(row > lo, row, torch.inf).min()
                lo = (lo + hi) / 2
            out[i] = lo
    return out


def point_pitches(xyz: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """B: median distance between horizontally adjacent valid points of each B×H×W×3 cloud (its own scale);
    0 where a frame has no such pair."""
    steps = torch.linalg.vector_norm(xyz[:, :, 1:] - xyz[:, :, :-1], dim=-1).flatten(1)
    both = (valid[:, :, 1:] & valid[:, :, :-1]).flatten(1)
    return masked_median(steps, both).nan_to_num(0.0)


def point_pitch(xyz: np.ndarray, valid: np.ndarray) -> float:
    """:func:`point_pitches` of one H×W×3 cloud."""
    return float(point_pitches(torch.from_numpy(np.ascontiguousarray(xyz))[None], torch.from_numpy(valid)[None])[0])


def _ragged(rows: list[np.ndarray], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of different lengths as one zero-padded B×N×``width`` tensor and its B×N mask."""
    n = max((len(r) for r in rows), default=0)
    out, mask = torch.zeros(len(rows), n, width, dtype=torch.float64), torch.zeros(len(rows), n, dtype=torch.bool)
    for i, r in enumerate(rows):
        out[i, : len(r)], mask[i, : len(r)] = torch.from_numpy(r), True
    return out, mask


def _hypotheses(count: int, cfg: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """RANSAC's draws for ``count`` border points: index triples (distinct points) and the points the
    hypotheses are ranked on (at most 2,000). The same seeded draws for every frame with as many points."""
    rng = np.random.default_rng(cfg.seed)
    picks = rng.integers(0, count, (cfg.ransac_iters, 3))
    picks = picks[(picks[:, 0] != picks[:, 1]) & (picks[:, 1] != picks[:, 2]) & (picks[:, 0] != picks[:, 2])]
    judge = np.arange(count) if count <= 2000 else rng.choice(count, 2000, replace=False)
    return picks, judge


def border_planes(xyz: torch.Tensor, valid: torch.Tensor, cfg: PreprocessConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Per frame of B×H×W×3 clouds: the plane (unit normal n, offset d with n·p + d = 0) through the image border's
    points, found by RANSAC and refined by least squares on its inliers, and its inlier distance
    (``plane_k`` × the inliers' robust noise, at least ``plane_min_pitch`` point spacings). Returns (B×4 planes,
    B distances); a frame without a plane (under 20 border points, degenerate draws) has distance NaN.

    All hypotheses of all frames are scored at once; the draws are seeded per frame, so one frame gives the
    same plane alone or in any batch."""
    b = cfg.border
    ring = torch.zeros_like(valid[0])
    ring[:b], ring[-b:], ring[:, :b], ring[:, -b:] = True, True, True, True
    pts_rows = [xyz[i][ring & valid[i]].double().numpy() for i in range(len(xyz))]  # only the border in float64
    pitch = point_pitches(xyz, valid).double()
    draws = [_hypotheses(len(r), cfg) if len(r) >= 20 else (np.zeros((0, 3), int), np.zeros(0, int)) for r in pts_rows]
    pts, pts_mask = _ragged(pts_rows, 3)
    tri, tri_mask = _ragged([p[d[0]].reshape(-1, 9) for p, d in zip(pts_rows, draws, strict=True)], 9)
    judge, judge_mask = _ragged([p[d[1]] for p, d in zip(pts_rows, draws, strict=True)], 3)
    if tri.shape[1] == 0:  # no frame has enough border points (e.g. colour-only frames with a blank cloud)
        return torch.zeros(len(xyz), 4, dtype=torch.float64), torch.full((len(xyz),), torch.nan, dtype=torch.float64)
    p0, p1, p2 = tri[..., 0:3], tri[..., 3:6], tri[..., 6:9]
    normals = torch.linalg.cross(p1 - p0, p2 - p0)
    norms = torch.linalg.vector_norm(normals, dim=-1)
    ok = tri_mask & (norms >= 1e-12)
    normals = normals / torch.where(ok, norms, 1.0)[..., None]
    offsets = -(normals * p0).sum(-1)
    coarse = torch.clamp(3 * pitch, min=1e-9)[:, None, None]
    distance = torch.baddbmm(offsets[..., None], normals, judge.transpose(1, 2)).abs_()  # hypotheses × judges
    near = (distance < coarse) & judge_mask[:, None]
    counts = torch.where(ok, near.sum(2), -1)
    best = counts.argmax(1)  # the first best, as a sequential loop keeps
    n = normals[torch.arange(len(xyz)), best]
    d = offsets[torch.arange(len(xyz)), best]
    inlier = (((pts @ n[..., None])[..., 0] + d[:, None]).abs() < coarse[:, 0]) & pts_mask
    # least squares on the inliers: the normal is the direction of least spread about their centre
    w = inlier.double()[..., None]
    centre = (pts * w).sum(1) / w.sum(1).clamp(min=1)
    spread = ((pts - centre[:, None]) * w).transpose(1, 2) @ (pts - centre[:, None])
    n = torch.linalg.eigh(spread).eigenvectors[..., 0]
    d = -(n * centre).sum(-1)
    resid = ((pts @ n[..., None])[..., 0] + d[:, None]).abs()
    noise = 1.4826 * masked_median(resid, inlier)
    dist = torch.maximum(cfg.plane_k * noise, cfg.plane_min_pitch * pitch)
    found = ok.any(1) & (inlier.sum(1) >= 3)
    return torch.cat([n, d[:, None]], 1), torch.where(found, dist, torch.nan)


def remove_background(xyz: np.ndarray, cfg: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """Zero the background plane's points (and stray clusters) of one H×W×3 cloud; returns (xyz, foreground)."""
    cloud, valid, _ = remove_background_planes(torch.from_numpy(np.ascontiguousarray(xyz))[None], cfg)
    return cloud[0].numpy(), valid[0].numpy()


def remove_background_planes(
    xyz: torch.Tensor, cfg: PreprocessConfig
) -> tuple[torch.Tensor, torch.Tensor, list[np.ndarray | None]]:
    """B×H×W×3 clouds with their background plane's points (and stray clusters) zeroed: (clouds, B×H×W
    foreground, the plane each frame lost or None)."""
    valid = (xyz != 0).any(-1)
    planes: list[np.ndarray | None] = [None] * len(xyz)
    if cfg.remove_plane:
        plane, dist = border_planes(xyz, valid, cfg)
        flat = torch.baddbmm(plane[:, None, 3:], xyz.double().flatten(1, 2), plane[:, :3, None])
        on_plane = (flat.abs_() < dist.nan_to_num(-1.0)[:, None, None]).view(valid.shape)  # NaN: no plane
        valid &= ~on_plane
        planes = [plane[i].numpy() if not dist[i].isnan() else None for i in range(len(xyz))]
    if cfg.largest_cluster:
        for i in range(len(xyz)):
            if valid[i].sum() > 30:
                valid[i] &= torch.from_numpy(_largest_cluster(xyz[i].numpy(), valid[i].numpy()))
    return xyz * valid[..., None], valid, planes


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
    """One frame at model resolution (:func:`prepare_batch` of one)."""
    return prepare_batch([(rgb, xyz)], cfg)[0]


def prepare_batch(frames: Sequence[tuple[np.ndarray, np.ndarray]], cfg: PreprocessConfig) -> list[Prepared]:
    """(rgb, xyz) frames at model resolution, as batched tensor operations over the frames of each size:
    background plane removed, padded to a square (RGB by edge replication, XYZ with zeros = missing), resized
    (bicubic RGB, nearest XYZ). Frames of mixed sizes may share a batch; the order is kept."""
    out: list[Prepared | None] = [None] * len(frames)
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, (rgb, _) in enumerate(frames):
        by_size.setdefault(rgb.shape[:2], []).append(i)
    for idx in by_size.values():
        rgb = torch.from_numpy(np.stack([frames[i][0] for i in idx]))
        xyz = torch.from_numpy(np.stack([frames[i][1] for i in idx]).astype(np.float32, copy=False))
        for i, p in zip(idx, _prepare_same_size(rgb, xyz, cfg), strict=True):
            out[i] = p
    return out  # type: ignore[return-value]


def _prepare_same_size(rgb: torch.Tensor, xyz: torch.Tensor, cfg: PreprocessConfig) -> list[Prepared]:
    """:func:`prepare_batch` for B frames of one size (B×H×W×3 uint8 and float32)."""
    h, w = rgb.shape[1:3]
    xyz, _, planes = remove_background_planes(xyz, cfg)
    side, r = max(h, w), cfg.resolution
    top, left = (side - h) // 2, (side - w) // 2
    pad = (left, side - w - left, top, side - h - top)
    image = F.pad(rgb.permute(0, 3, 1, 2), pad, mode="replicate").permute(0, 2, 3, 1).numpy()
    if side != r:  # PIL's bicubic in fixed point: torch's float bicubic differs by one level on ~15 % of pixels
        image = np.stack([np.asarray(Image.fromarray(im).resize((r, r), Image.BICUBIC)) for im in image])
    cloud = F.pad(xyz.permute(0, 3, 1, 2), pad).permute(0, 2, 3, 1)
    nearest = (torch.arange(r) * side / r + side / (2 * r)).long().clamp(0, side - 1)
    cloud = cloud[:, nearest][:, :, nearest].contiguous()
    valid = (cloud != 0).any(-1)
    return [
        Prepared(image[i], cloud[i].numpy(), valid[i].numpy(), (h, w), (top, left), planes[i]) for i in range(len(rgb))
    ]


def to_frame_resolution(grid_map: np.ndarray, prep: Prepared) -> np.ndarray:
    """Map an R×R (or any square) model-resolution map back onto the frame's H×W pixels."""
    return maps_to_frames(torch.from_numpy(np.ascontiguousarray(grid_map, np.float32))[None], [prep])[0]


def maps_to_frames(maps: torch.Tensor, prepared: Sequence[Prepared]) -> list[np.ndarray]:
    """B×R×R model-resolution maps onto each frame's own H×W pixels (frames of mixed sizes in one batch): resized
    bilinearly to the frame's padded square (antialiased when shrinking, as PIL does), the padding cut off."""
    out: list[np.ndarray | None] = [None] * len(prepared)
    by_side: dict[int, list[int]] = {}
    for i, p in enumerate(prepared):
        by_side.setdefault(max(p.orig_shape), []).append(i)
    for side, idx in by_side.items():
        group = maps[idx].float()[:, None]
        if group.shape[-1] != side:
            shrink = side < group.shape[-1]
            group = F.interpolate(group, size=(side, side), mode="bilinear", align_corners=False, antialias=shrink)
        group = group[:, 0].cpu().numpy()
        for j, i in enumerate(idx):
            (h, w), (top, left) = prepared[i].orig_shape, prepared[i].pad
            out[i] = np.ascontiguousarray(group[j, top : top + h, left : left + w])
    return out  # type: ignore[return-value]
