"""BTF — "Back to the Feature" (Horwitz & Hoshen, 2022): the reference every method must beat.

Dense RGB features (an offline ImageNet backbone) and/or FPFH point-cloud descriptors on one
grid, a PatchCore memory bank of good patches reduced by greedy coreset selection, and the
distance to the nearest bank patch as the anomaly score. Maps are upsampled to the model
resolution, Gaussian-smoothed (σ = 4 px) and the image score is their maximum.

Differences from the reference code, on purpose: the two modalities are standardised per
channel and weighted so each contributes equally (the reference concatenates raw WideResNet
and FPFH values, letting the larger one dominate), FPFH radii scale with the cloud's point
spacing, and the bank is memory-bounded (``max_patches`` before the coreset).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from rich.progress import track

from .base import AnomalyOutput, FrameLike, register
from .components import NearestNeighbours, greedy_coreset, random_subsample
from .feature_method import FeatureMethod, FeatureOptions


@dataclass(frozen=True)
class BTFOptions(FeatureOptions):
    coreset_ratio: float = 0.1
    max_patches: int = 200_000


@register
class BTF(FeatureMethod):
    name = "btf"

    Options = BTFOptions
    opts: BTFOptions

    def _init_state(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}
        self.nn: NearestNeighbours | None = None

    def state(self) -> dict[str, torch.Tensor]:
        return self.tensors

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        if "bank" not in state or "mean" not in state or "std" not in state or "weight" not in state:
            raise KeyError("btf state needs bank, mean, std and weight")
        self.tensors = {k: v.float() for k, v in state.items()}
        self.to(self.device)

    def to(self, device: str) -> BTF:
        self._move_pipeline(device)
        self.tensors = {k: v.to(device) for k, v in self.tensors.items()}
        if "bank" in self.tensors:
            self.nn = NearestNeighbours(self.tensors["bank"])
        return self

    def _patches(self, frames: Sequence[FrameLike]) -> tuple[list, torch.Tensor, torch.Tensor]:
        """B×G×G×C raw patch features and B×G×G validity (where the modality has data)."""
        prepared, feats = self.pipeline(frames)
        parts = [feats[n][0] for n in self.pipeline.names]
        x = torch.cat(parts, dim=1).permute(0, 2, 3, 1).contiguous()
        valid = feats["xyz:fpfh"][1] > 0 if self.modality == "xyz" else torch.ones(x.shape[:3], dtype=torch.bool)
        return prepared, x, valid

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        t = self.tensors
        return (x.to(t["mean"].device) - t["mean"]) / t["std"] * t["weight"]

    def fit(self, frames: Iterable[FrameLike], progress: bool = True) -> BTF:
        frames = self._settle(frames)
        chunks = [frames[i : i + 8] for i in range(0, len(frames), 8)]
        xs, vs = [], []
        for chunk in track(chunks, description=f"btf[{self.modality}]: features of good frames", disable=not progress):
            _, x, v = self._patches(chunk)
            xs.append(x)
            vs.append(v)
        x, valid = torch.cat(xs), torch.cat(vs)
        patches = x[valid]
        mean = patches.mean(0)
        # One scale per modality (not per channel: FPFH bins that are almost always empty
        # would otherwise amplify noise), chosen so each modality's centred squared norm
        # averages 1 and both weigh the same in the distance.
        scales = []
        for lo, hi in self._group_slices(x.shape[-1]):
            rms = ((patches[:, lo:hi] - mean[lo:hi]) ** 2).sum(1).mean().sqrt().clamp_min(1e-6)
            scales.append(torch.full((hi - lo,), float(rms)))
        std = torch.cat(scales)
        self.tensors = {"mean": mean, "std": std, "weight": torch.ones_like(std)}
        emb = self._embed(random_subsample(patches, self.opts.max_patches, self.opts.seed))
        n = max(1, int(len(emb) * self.opts.coreset_ratio))
        idx = greedy_coreset(emb, n, seed=self.opts.seed)
        self.tensors["bank"] = emb[idx].contiguous()
        return self.to(self.device)

    def _group_slices(self, total: int) -> list[tuple[int, int]]:
        return [(0, total - 33), (total - 33, total)] if self.modality == "both" else [(0, total)]

    @torch.no_grad()
    def score(self, batch: Sequence[FrameLike]) -> AnomalyOutput:
        if self.nn is None:
            raise RuntimeError("btf model is not fitted")
        prepared, x, valid = self._patches(batch)
        b, g = x.shape[:2]
        d = self.nn(self._embed(x).flatten(0, 2)).view(b, g, g) * valid.to(self.device)
        smooth = self._to_maps(d)
        maps = self._frame_maps(smooth, prepared)
        scores = smooth.reshape(b, -1).max(1).astype(np.float32)
        return AnomalyOutput(scores, maps, [list(self.mods)] * b)
