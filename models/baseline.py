"""Weight-free baseline: handcrafted colour and geometry descriptors, nearest-neighbour scoring.

Per pixel (on a fixed working grid) it describes colour (gain-normalised opponent
channels and their local contrast) and geometry (height above the background plane,
difference-of-Gaussians curvature at two scales, slope). Fitting stores a memory bank
per modality from good frames; scoring is the distance to the nearest bank entry,
divided by the 99.9th percentile of that distance on held-out good frames, so the
two modalities share one scale and the map is their maximum. Geometry scores count
only where the sensor measured a point; a frame with too few points is scored on
colour alone and reported as such.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from rich.progress import track
from scipy import ndimage

from .base import AnomalyModel, AnomalyOutput, FrameLike, colour_missing, register
from .components import NearestNeighbours, gaussian_blur, height_above_plane, knn_distance, random_subsample


def _resize(arr: np.ndarray, size: int, resample: int) -> np.ndarray:
    return np.stack(
        [np.asarray(Image.fromarray(arr[..., c]).resize((size, size), resample)) for c in range(arr.shape[2])], axis=2
    )


def colour_features(rgb: np.ndarray, size: int) -> np.ndarray:
    img = _resize(rgb, size, Image.BILINEAR).astype(np.float32) / 255.0
    img = img / (np.median(img.mean(axis=2)) + 1e-3)  # invariant to global illumination gain
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    chans = [(r + g + b) / 3, r - g, (r + g) / 2 - b]
    smooth = [ndimage.gaussian_filter(c, 1.0) for c in chans]
    contrast = [s - ndimage.gaussian_filter(c, 4.0) for s, c in zip(smooth, chans, strict=True)]
    return np.stack(smooth + contrast, axis=2)


def geometry_features(xyz: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    height, valid = height_above_plane(xyz)
    h = np.asarray(Image.fromarray(height).resize((size, size), Image.NEAREST))
    v = np.asarray(Image.fromarray(valid).resize((size, size), Image.NEAREST))
    h1, h2, h3, h5 = (ndimage.gaussian_filter(h, s) for s in (1.0, 2.0, 3.0, 5.0))
    gy, gx = np.gradient(h1)
    return np.stack([h1 / 3.0, (h1 - h3) * 4.0, (h2 - h5) * 2.0, np.hypot(gx, gy)], axis=2), v


@register
class BaselineModel(AnomalyModel):
    name = "baseline"

    def __init__(
        self,
        work_size: int = 96,
        stride: int = 2,
        bank_size: int = 100_000,
        sigma: float = 1.0,
        min_valid: float = 0.2,
        seed: int = 0,
    ) -> None:
        self.work_size, self.stride, self.bank_size = work_size, stride, bank_size
        self.sigma, self.min_valid, self.seed = sigma, min_valid, seed
        self.device = "cpu"
        self.tensors: dict[str, torch.Tensor] = {}
        self.nn: dict[str, NearestNeighbours] = {}
        self.version = "1"

    def config(self) -> dict[str, Any]:
        return dict(
            work_size=self.work_size,
            stride=self.stride,
            bank_size=self.bank_size,
            sigma=self.sigma,
            min_valid=self.min_valid,
            seed=self.seed,
        )

    def state(self) -> dict[str, torch.Tensor]:
        return self.tensors

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        need = {"rgb_bank", "geo_bank", "rgb_mean", "rgb_std", "geo_mean", "geo_std", "scales"}
        if missing := need - state.keys():
            raise KeyError(f"state lacks {', '.join(sorted(missing))}")
        self.tensors = {
            "geo_fitted": torch.tensor(1.0),
            **{k: v.float() for k, v in state.items()},
        }  # older files always had geometry
        self.to(self.device)

    @property
    def scores_depth_alone(self) -> bool:  # type: ignore[override]
        """Its map is a max over modalities, so geometry alone still scores, if it learnt any."""
        return bool(self.tensors.get("geo_fitted", torch.tensor(1.0)) > 0)

    def to(self, device: str) -> BaselineModel:
        self.device = device
        self.tensors = {k: v.to(device) for k, v in self.tensors.items()}
        self.nn = {
            m: NearestNeighbours(self.tensors[f"{m}_bank"]) for m in ("rgb", "geo") if f"{m}_bank" in self.tensors
        }
        return self

    def _features(self, frame: FrameLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = self.stride
        rgb = colour_features(frame.rgb, self.work_size)[::s, ::s]
        geo, valid = geometry_features(frame.xyz, self.work_size)
        return rgb, geo[::s, ::s], valid[::s, ::s]

    def fit(self, frames: Iterable[FrameLike], progress: bool = True) -> BaselineModel:
        feats = [
            self._features(f)
            for f in track(list(frames), description="baseline: describing good frames", disable=not progress)
        ]
        if len(feats) < 2:
            raise ValueError("baseline needs at least 2 good frames to fit")
        rgb = torch.from_numpy(np.stack([f[0] for f in feats])).float()
        geo = torch.from_numpy(np.stack([f[1] for f in feats])).float()
        valid = torch.from_numpy(np.stack([f[2] for f in feats]))
        # Hold out every 5th frame to learn each modality's normal distance scale.
        held = torch.zeros(len(feats), dtype=torch.bool)
        held[::5] = True
        # A colour-only station (every cloud empty) trains colour alone; geometry then never counts.
        has_geo = bool(valid[~held].any() and valid[held].any())
        t: dict[str, torch.Tensor] = {
            "rgb_mean": rgb.flatten(0, 2).mean(0),
            "rgb_std": rgb.flatten(0, 2).std(0) + 1e-6,
            "geo_mean": geo[valid].mean(0) if has_geo else torch.zeros(geo.shape[-1]),
            "geo_std": geo[valid].std(0) + 1e-6 if has_geo else torch.ones(geo.shape[-1]),
            "geo_fitted": torch.tensor(float(has_geo)),
        }
        rgb_n = (rgb - t["rgb_mean"]) / t["rgb_std"]
        geo_n = (geo - t["geo_mean"]) / t["geo_std"]
        scales = []
        for x, m in (
            ((rgb_n, torch.ones_like(valid)), (geo_n, valid)) if has_geo else ((rgb_n, torch.ones_like(valid)),)
        ):
            bank = random_subsample(x[~held][m[~held]], self.bank_size, self.seed)
            d = knn_distance(x[held][m[held]], bank)
            scales.append(torch.quantile(d[:200_000], 0.999).clamp_min(1e-6))
        t["rgb_bank"] = random_subsample(rgb_n.flatten(0, 2), self.bank_size, self.seed)
        t["geo_bank"] = (
            random_subsample(geo_n[valid], self.bank_size, self.seed) if has_geo else torch.zeros(1, geo.shape[-1])
        )
        t["scales"] = torch.stack(scales + ([] if has_geo else [torch.tensor(1.0)]))
        self.tensors = t
        return self.to(self.device)

    @torch.no_grad()
    def score(self, batch: Sequence[FrameLike]) -> AnomalyOutput:
        if not self.tensors:
            raise RuntimeError("baseline model is not fitted")
        t = self.tensors
        feats = [self._features(f) for f in batch]
        rgb = torch.from_numpy(np.stack([f[0] for f in feats])).to(self.device)
        geo = torch.from_numpy(np.stack([f[1] for f in feats])).to(self.device)
        valid = torch.from_numpy(np.stack([f[2] for f in feats])).to(self.device)
        b, g = rgb.shape[:2]
        d_rgb = self.nn["rgb"](((rgb - t["rgb_mean"]) / t["rgb_std"]).flatten(0, 2)).view(b, g, g)
        d_geo = self.nn["geo"](((geo - t["geo_mean"]) / t["geo_std"]).flatten(0, 2)).view(b, g, g)
        fitted = bool(t["geo_fitted"] > 0)
        use_geo = (valid.flatten(1).float().mean(1) >= self.min_valid) & fitted
        geo_map = d_geo / t["scales"][1] * valid * use_geo[:, None, None]
        no_colour = torch.from_numpy(colour_missing(batch)).to(self.device)
        rgb_map = (d_rgb / t["scales"][0]) * ~no_colour[:, None, None]  # a black stand-in image says nothing
        grid_map = torch.maximum(rgb_map, geo_map)
        maps: list[np.ndarray] = []
        for i, f in enumerate(batch):
            h, w = f.rgb.shape[:2]
            up = F.interpolate(grid_map[i][None, None], size=(h, w), mode="bilinear", align_corners=False)[0]
            maps.append(gaussian_blur(up, self.sigma * h / g)[0].float().cpu().numpy())
        scores = np.array([m.max() for m in maps], dtype=np.float32)
        per_frame = list(zip(no_colour.tolist(), use_geo.tolist(), strict=True))
        modalities = [(["rgb"] if not c else []) + (["xyz"] if u else []) for c, u in per_frame]
        scores[np.array([not m for m in modalities], dtype=bool)] = np.nan  # neither input usable: nothing to score
        degraded = [c or (fitted and not u) for c, u in per_frame]
        return AnomalyOutput(scores, maps, modalities, degraded=degraded)
