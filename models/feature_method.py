"""Set-up shared by the methods that score dense RGB / 3D feature maps (btf, mafr, cmdr, ...)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import Progress

from .base import AnomalyModel, FrameLike
from .components import gaussian_blur
from .features import FeatureConfig, FeaturePipeline
from .preprocess import Prepared, PreprocessConfig, to_frame_resolution

MODALITIES = {"rgb": ["rgb"], "xyz": ["xyz"], "both": ["rgb", "xyz"]}


class FeatureMethod(AnomalyModel):
    """Holds the modality choice and the preprocessing + feature pipeline; moves with ``to``."""

    stats: dict[str, torch.Tensor]

    def _setup_features(self, modality: str, rgb_backbone: str, resolution: int, grid: int, device: str, cache_dir: str | None, xyz_features: str = "fpfh") -> None:
        """``xyz_features``: '+'-joined 3D extractors (``fpfh``, ``geometry``), concatenated per location."""
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {', '.join(MODALITIES)}")
        self.modality, self.device = modality, device
        self.mods = MODALITIES[modality]
        self.extractors = {"rgb": [f"rgb:{rgb_backbone}"], "xyz": [f"xyz:{x}" for x in xyz_features.split("+")]}
        names = [n for m in self.mods for n in self.extractors[m]]
        self.pipeline = FeaturePipeline(names, PreprocessConfig(resolution=resolution), FeatureConfig(grid=grid), device, cache_dir)

    def modality_features(self, frames: Sequence[FrameLike]) -> tuple[list[Prepared], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Per modality: B×C×G×G features (its extractors concatenated) and B×G×G validity
        (RGB: everywhere; 3D: cells where the first 3D extractor has enough measured points)."""
        prepared, raw = self.pipeline(frames)
        feats = {m: torch.cat([raw[n][0] for n in self.extractors[m]], dim=1) for m in self.mods}
        valid = {m: (raw[self.extractors[m][0]][1] > 0).float() for m in self.mods}
        return prepared, feats, valid

    def _features_on_device(self, frames: Sequence[FrameLike]) -> tuple[list[Prepared], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        prepared, feats, valid = self.modality_features(frames)
        return prepared, {m: f.to(self.device) for m, f in feats.items()}, {m: v.to(self.device) for m, v in valid.items()}

    def _gather(self, frames: Sequence[FrameLike], bar: Progress, label: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Features and validity of all ``frames``, in chunks of 8, with a progress bar."""
        feats: dict[str, list[torch.Tensor]] = {m: [] for m in self.mods}
        valid: dict[str, list[torch.Tensor]] = {m: [] for m in self.mods}
        task = bar.add_task(label, total=len(frames))
        for i in range(0, len(frames), 8):
            _, f, v = self._features_on_device(frames[i : i + 8])
            for m in self.mods:
                feats[m].append(f[m])
                valid[m].append(v[m])
            bar.advance(task, len(frames[i : i + 8]))
        return {m: torch.cat(feats[m]) for m in self.mods}, {m: torch.cat(valid[m]) for m in self.mods}

    def _fit_standardisation(self, x: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]) -> None:
        """Centre per channel and use one scale per modality (see btf): the valid cells' mean
        squared distance from the centre becomes the number of channels."""
        for m in self.mods:
            pix = x[m].permute(0, 2, 3, 1)[valid[m] > 0]
            mean = pix.mean(0)
            self.stats[f"{m}_mean"] = mean
            self.stats[f"{m}_scale"] = ((pix - mean) ** 2).sum(1).mean().sqrt().clamp_min(1e-6) / np.sqrt(pix.shape[1])

    def _standardise(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {m: (x - self.stats[f"{m}_mean"].view(1, -1, 1, 1)) / self.stats[f"{m}_scale"] for m, x in feats.items()}

    def _to_maps(self, grid_map: torch.Tensor, resolution: int, sigma: float) -> np.ndarray:
        """B×G×G grid scores -> B×R×R, bilinearly upsampled and Gaussian-smoothed, on the CPU."""
        up = F.interpolate(grid_map[:, None], size=(resolution, resolution), mode="bilinear", align_corners=False)[:, 0]
        return gaussian_blur(up, sigma).cpu().numpy()

    @staticmethod
    def _frame_maps(maps: np.ndarray, prepared: Sequence[Prepared]) -> list[np.ndarray]:
        return [to_frame_resolution(m, p) for m, p in zip(maps, prepared)]

    def _move_pipeline(self, device: str) -> None:
        self.device = device
        self.pipeline.device = device
