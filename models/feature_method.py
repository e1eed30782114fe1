"""Set-up shared by the methods that score dense RGB / FPFH feature maps (btf, mafr, ...)."""

from __future__ import annotations

from typing import Sequence

import torch

from .base import AnomalyModel, FrameLike
from .features import FeatureConfig, FeaturePipeline
from .preprocess import Prepared, PreprocessConfig

MODALITIES = {"rgb": ["rgb"], "xyz": ["xyz"], "both": ["rgb", "xyz"]}


class FeatureMethod(AnomalyModel):
    """Holds the modality choice and the preprocessing + feature pipeline; moves with ``to``."""

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

    def _move_pipeline(self, device: str) -> None:
        self.device = device
        self.pipeline.device = device
