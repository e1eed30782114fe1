"""Dense feature maps on one common grid, behind a registry.

Names: ``rgb:efficientnet_lite0`` (default), ``rgb:mobilenet_v2``, ``rgb:file:<path>``
(a TorchScript backbone the user owns) and ``xyz:fpfh``. Every extractor takes prepared
frames (:mod:`models.preprocess`) and returns ``(B×C×G×G features, B×G×G validity)``.
Computed maps can be cached on disk, keyed by the frame's content hash and the settings.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .backbones import input_normalisation, load_backbone
from .parallel import map_frames
from .preprocess import Prepared, PreprocessConfig, point_pitch, point_pitches
from .runtime import on_runtime

# Part of every cache key: bump when an extractor's output changes for the same settings.
FEATURES_VERSION = 3  # 3: each backbone gets the input normalisation its weights expect


@dataclass(frozen=True)
class FeatureConfig:
    grid: int = 28  # common grid side (stride 8 at 224)
    normal_pitches: float = 4.0  # FPFH: normals radius, in point spacings
    fpfh_pitches: float = 8.0  # FPFH: descriptor radius, in point spacings
    normal_nn: int = 30
    fpfh_nn: int = 30
    max_points: int = 40_000  # larger clouds are voxel-downsampled before FPFH
    min_cell_valid: float = 0.5  # a grid cell needs this share of measured pixels to count (rims are unreliable)


def local_mean(maps: torch.Tensor) -> torch.Tensor:
    """The mean of each cell's 3×3 neighbourhood, over the cells that exist (PatchCore's local aggregation;
    ``avg_pool2d(3, 1, 1, count_include_pad=False)``, as shifted sums: 5x cheaper on a CPU)."""

    def box(x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (1, 1, 1, 1))
        x = x[..., :-2] + x[..., 1:-1] + x[..., 2:]
        return x[..., :-2, :] + x[..., 1:-1, :] + x[..., 2:, :]

    return box(maps) / box(maps.new_ones((1, 1, *maps.shape[-2:])))


class RGBFeatures:
    """Stride-8 and stride-16 maps, upsampled to the grid, concatenated, 3×3 locally averaged (PatchCore)."""

    def __init__(self, backbone: str, cfg: FeatureConfig, device: str = "cpu") -> None:
        self.name, self.cfg, self.device = f"rgb:{backbone}", cfg, device
        self.net = on_runtime(load_backbone(backbone), backbone, device)  # onnxruntime on CPU when available
        self.mean, self.std = input_normalisation(backbone)

    def __call__(self, batch: Sequence[Prepared]) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.cfg.grid
        return self.from_images(np.stack([p.rgb for p in batch])), torch.ones(len(batch), g, g)

    @torch.no_grad()
    def from_images(self, images: np.ndarray) -> torch.Tensor:
        """B×R×R×3 uint8 images -> B×C×G×G features (for images made on the fly, e.g. synthetic anomalies)."""
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(255)
        x = (x - self.mean) / self.std
        if self.device.startswith("cuda"):  # pinned host memory, async copy, half precision on the GPU
            x = x.pin_memory().to(self.device, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.float16):
                maps = self.net(x)
        else:
            maps = self.net(x.to(self.device))
        maps = maps if isinstance(maps, (list, tuple)) else [maps]
        g = self.cfg.grid
        feats = torch.cat([F.interpolate(m, size=(g, g), mode="bilinear", align_corners=False) for m in maps], dim=1)
        return local_mean(feats).float().cpu()


class VisibleDepthFeatures(RGBFeatures):
    """The RGB backbone run on the visible-depth image (BridgeNet): ``xyz:visible_depth:<backbone>``.
    A cell is valid when at least ``min_cell_valid`` of it lies on the part."""

    def __init__(self, backbone: str, cfg: FeatureConfig, device: str = "cpu") -> None:
        super().__init__(backbone, cfg, device)
        self.name = f"xyz:visible_depth:{backbone}"

    def __call__(self, batch: Sequence[Prepared]) -> tuple[torch.Tensor, torch.Tensor]:
        from .visible_depth import depth_image, part_regions

        regions = list(part_regions(np.stack([p.valid for p in batch])))
        pairs = list(zip(batch, regions, strict=True))
        feats = self.from_images(np.stack(map_frames(lambda pair: depth_image(*pair), pairs)))
        g = self.cfg.grid
        region = torch.from_numpy(np.stack(regions)).float()[:, None]
        share = F.adaptive_avg_pool2d(region, g)[:, 0]
        return feats, (share >= self.cfg.min_cell_valid).float()


def cell_average(dense: torch.Tensor, valid: torch.Tensor, cfg: FeatureConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """B×C×R×R per-pixel descriptors (zero off the part) -> B×C×G×G cell means over the measured pixels, and
    B×G×G validity: a cell counts only with ``min_cell_valid`` of its pixels measured (rims are unreliable);
    invalid cells carry zeros."""
    g, r = cfg.grid, valid.shape[-1]
    k = r // g
    b, c = dense.shape[:2]
    cells = dense[..., : g * k, : g * k].reshape(b, c, g, k, g, k).sum((3, 5))
    counts = valid[:, : g * k, : g * k].reshape(b, g, k, g, k).sum((2, 4)).float()
    ok = counts >= cfg.min_cell_valid * k * k
    feats = torch.where(ok[:, None], cells / counts.clamp(min=1)[:, None], 0.0)
    return feats.float(), ok.float()


class _PointCellFeatures:
    """A per-pixel descriptor of the foreground points (``dense``, one frame), averaged per grid cell."""

    def __init__(self, cfg: FeatureConfig) -> None:
        self.cfg = cfg

    def dense(self, p: Prepared) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, batch: Sequence[Prepared]) -> tuple[torch.Tensor, torch.Tensor]:
        dense = torch.from_numpy(np.stack(map_frames(self.dense, batch))).permute(0, 3, 1, 2)
        return cell_average(dense, torch.from_numpy(np.stack([p.valid for p in batch])), self.cfg)


class FPFHFeatures(_PointCellFeatures):
    """open3d FPFH (33-d) on the foreground points, scattered back to pixels, averaged per grid cell.

    Radii are multiples of the cloud's own point spacing, so they hold for any unit and
    sensor resolution.
    """

    name = "xyz:fpfh"

    def dense(self, p: Prepared) -> np.ndarray:
        import open3d as o3d

        r = p.valid.shape[0]
        dense = np.zeros((r, r, 33), np.float32)
        if p.valid.sum() >= 10:
            pts = p.xyz[p.valid].astype(np.float64)
            pitch = max(point_pitch(p.xyz, p.valid), 1e-9)
            pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
            if len(pts) > self.cfg.max_points:
                voxel = pitch * np.sqrt(len(pts) / self.cfg.max_points)
                pcd = pcd.voxel_down_sample(voxel)
                pitch = voxel
            search = o3d.geometry.KDTreeSearchParamHybrid
            pcd.estimate_normals(search(radius=self.cfg.normal_pitches * pitch, max_nn=self.cfg.normal_nn))
            pcd.orient_normals_towards_camera_location(np.zeros(3))
            fpfh = np.asarray(
                o3d.pipelines.registration.compute_fpfh_feature(
                    pcd, search(radius=self.cfg.fpfh_pitches * pitch, max_nn=self.cfg.fpfh_nn)
                ).data
            ).T
            if len(fpfh) != len(pts):  # downsampled: every pixel takes its nearest kept point's descriptor
                from scipy.spatial import cKDTree

                _, idx = cKDTree(np.asarray(pcd.points)).query(pts, k=1)
                fpfh = fpfh[idx]
            dense[p.valid] = fpfh
        return dense


class GeometryFeatures:
    """Local surface shape straight from the organized cloud (no open3d): depth differences of
    Gaussians at two scales (curvature) and slope, in units of the point spacing so they hold for
    any unit and resolution; averaged per grid cell with the same validity rule as FPFH. Batched: one
    set of tensor operations for the whole batch."""

    name = "xyz:geometry"
    SIGMAS = (1.0, 2.0, 4.0)

    def __init__(self, cfg: FeatureConfig) -> None:
        self.cfg = cfg

    def dense(self, xyz: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """B×R×R×3 clouds (zeros off the part) -> B×3×R×R descriptors, zero off the part."""
        from .components import fill_invalid, gaussian_filters

        pitch = point_pitches(xyz, valid).double().clamp(min=1e-9)
        depth = np.stack(
            map_frames(lambda i: fill_invalid(xyz[i, ..., 2].double().numpy(), valid[i].numpy()), range(len(xyz)))
        )
        z = torch.from_numpy(depth) / pitch[:, None, None]
        z = (z - z.mean((1, 2), keepdim=True)).float()  # centred: float32 keeps the differences exact enough
        s1, s2, s4 = gaussian_filters(z, self.SIGMAS)
        gy, gx = torch.gradient(s2, dim=(1, 2))
        return torch.stack([s1 - s2, s2 - s4, torch.hypot(gx, gy)], 1) * valid[:, None]

    def __call__(self, batch: Sequence[Prepared]) -> tuple[torch.Tensor, torch.Tensor]:
        xyz = torch.from_numpy(np.stack([p.xyz for p in batch]))
        valid = torch.from_numpy(np.stack([p.valid for p in batch]))
        return cell_average(self.dense(xyz, valid), valid, self.cfg)


def create_extractor(
    name: str, cfg: FeatureConfig, device: str = "cpu"
) -> RGBFeatures | VisibleDepthFeatures | FPFHFeatures | GeometryFeatures:
    if name == "xyz:fpfh":
        return FPFHFeatures(cfg)
    if name == "xyz:geometry":
        return GeometryFeatures(cfg)
    if name.startswith("rgb:"):
        return RGBFeatures(name[4:], cfg, device)
    if name.startswith("xyz:visible_depth:"):
        return VisibleDepthFeatures(name[len("xyz:visible_depth:") :], cfg, device)
    raise KeyError(
        f"unknown feature extractor {name!r} (rgb:efficientnet_lite0, rgb:mobilenet_v2, rgb:file:<path>, xyz:fpfh, "
        "xyz:geometry, xyz:visible_depth:<backbone>)"
    )


class FeatureCache:
    """Feature maps on disk as ``.npz`` (never pickled), keyed by frame content and settings."""

    def __init__(self, root: str | Path | None) -> None:
        self.root = Path(root) if root else None

    @staticmethod
    def key(rgb: np.ndarray, xyz: np.ndarray, settings: dict) -> str:
        h = hashlib.sha1()
        for a in (rgb, xyz):
            h.update(str(a.shape).encode())
            h.update(np.ascontiguousarray(a).tobytes())
        h.update(json.dumps(settings, sort_keys=True).encode())
        return h.hexdigest()

    def get(self, key: str) -> tuple[np.ndarray, np.ndarray] | None:
        if self.root is None:
            return None
        path = self.root / key[:2] / f"{key}.npz"
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as z:
            return z["features"], z["valid"]

    def put(self, key: str, features: np.ndarray, valid: np.ndarray) -> None:
        if self.root is None:
            return
        path = self.root / key[:2] / f"{key}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")  # processes sharing the cache never write one file
        np.savez(tmp, features=features, valid=valid)
        tmp.replace(path)


class FeaturePipeline:
    """Preprocess frames and run the named extractors, with an optional on-disk cache."""

    def __init__(
        self,
        extractors: Sequence[str],
        prep: PreprocessConfig,
        feat: FeatureConfig,
        device: str = "cpu",
        cache_dir: str | Path | None = None,
    ) -> None:
        self.names, self.prep_cfg, self.feat_cfg, self.device = list(extractors), prep, feat, device
        self.cache = FeatureCache(cache_dir)
        self._extractors: dict[str, RGBFeatures | VisibleDepthFeatures | FPFHFeatures | GeometryFeatures] = {}
        self.timing = {"features_s": 0.0, "frames": 0}

    def extractor(self, name: str) -> RGBFeatures | VisibleDepthFeatures | FPFHFeatures | GeometryFeatures:
        """The named extractor, built on first use. Building one (a network's random init before its weights
        load, an ONNX export) must not move torch's global random stream: a method that first needs its
        backbone while training (BridgeNet's synthetic anomalies, on a warm feature cache) would otherwise
        train differently from one whose backbone was already built."""
        if name not in self._extractors:
            with torch.random.fork_rng(devices=[]):
                self._extractors[name] = create_extractor(name, self.feat_cfg, self.device)
        return self._extractors[name]

    def __call__(self, frames: Sequence[object]) -> tuple[list[Prepared], dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        import time

        from .preprocess import prepare_batch

        t0 = time.perf_counter()
        prepared = prepare_batch([(f.rgb, f.xyz) for f in frames], self.prep_cfg)  # type: ignore[attr-defined]
        out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for name in self.names:
            settings = {
                "extractor": name,
                "version": FEATURES_VERSION,
                **asdict(self.prep_cfg),
                **asdict(self.feat_cfg),
            }
            keys = [self.cache.key(f.rgb, f.xyz, settings) for f in frames] if self.cache.root else [None] * len(frames)  # type: ignore[attr-defined]
            hits = [self.cache.get(k) if k else None for k in keys]
            missing = [i for i, h in enumerate(hits) if h is None]
            if missing:
                feats, valid = self.extractor(name)([prepared[i] for i in missing])
                for j, i in enumerate(missing):
                    hits[i] = (feats[j].numpy(), valid[j].numpy())
                    if keys[i]:
                        self.cache.put(keys[i], *hits[i])  # type: ignore[misc]
            out[name] = (
                torch.from_numpy(np.stack([h[0] for h in hits])),
                torch.from_numpy(np.stack([h[1] for h in hits])),
            )  # type: ignore[index]
        self.timing["features_s"] += time.perf_counter() - t0
        self.timing["frames"] += len(frames)
        return prepared, out
