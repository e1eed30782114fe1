"""Set-up shared by the methods that score dense RGB / FPFH feature maps (btf, mafr, ...)."""

from __future__ import annotations

from .base import AnomalyModel
from .features import FeatureConfig, FeaturePipeline
from .preprocess import PreprocessConfig

MODALITIES = {"rgb": ["rgb"], "xyz": ["xyz"], "both": ["rgb", "xyz"]}


class FeatureMethod(AnomalyModel):
    """Holds the modality choice and the preprocessing + feature pipeline; moves with ``to``."""

    def _setup_features(self, modality: str, rgb_backbone: str, resolution: int, grid: int, device: str, cache_dir: str | None) -> None:
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {', '.join(MODALITIES)}")
        self.modality, self.device = modality, device
        self.mods = MODALITIES[modality]
        self.extractors = {"rgb": f"rgb:{rgb_backbone}", "xyz": "xyz:fpfh"}
        names = [self.extractors[m] for m in self.mods]
        self.pipeline = FeaturePipeline(names, PreprocessConfig(resolution=resolution), FeatureConfig(grid=grid), device, cache_dir)

    def _move_pipeline(self, device: str) -> None:
        self.device = device
        self.pipeline.device = device
