"""PatchCore with late fusion: the strong reference every seed method has to beat.

One memory bank of good patches per modality (RGB backbone features; FPFH on the part's points),
each reduced by greedy coreset selection. A patch's anomaly is its distance to the nearest bank
entry. Modalities are fused late (:mod:`models.fusion`): each map divided by its 99th percentile
on good validation frames, then summed, as M3DM and G2SF do; BTF's early fusion (one concatenated
bank) lets the modality with the larger spread dominate. Maps are upsampled, Gaussian-smoothed
(σ = 4 px) and the image score is their maximum.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from rich.progress import Progress

from . import fusion
from .base import AnomalyOutput, FrameLike, colour_missing, register, threshold_from_scores
from .components import NearestNeighbours, greedy_coreset, random_subsample
from .feature_method import FeatureMethod, FeatureOptions


@dataclass(frozen=True)
class PatchCoreOptions(FeatureOptions):
    xyz_features: str = "fpfh"
    coreset_ratio: float = 0.1
    max_bank: int = 16384
    max_patches: int = 100000
    quantile: float = 0.99
    fusion: str = "sum"
    degraded_below: float = 0.25
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {**FeatureOptions.CHOICES, "fusion": ("sum", "max")}


@register
class PatchCore(FeatureMethod):
    name = "patchcore"
    scores_depth_alone = True  # late fusion: the 3D map alone, on the fused scale, scores a frame without colour

    Options = PatchCoreOptions
    opts: PatchCoreOptions

    def _init_state(self) -> None:
        self.banks: dict[str, torch.Tensor] = {}
        self.nn: dict[str, NearestNeighbours] = {}

    def state(self) -> dict[str, torch.Tensor]:
        return {**{f"bank.{m}": b for m, b in self.banks.items()}, **{f"stats.{k}": v for k, v in self.stats.items()}}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.banks = {k[5:]: v.float() for k, v in state.items() if k.startswith("bank.")}
        self.stats = {k[6:]: v.float() for k, v in state.items() if k.startswith("stats.")}
        if set(self.banks) != set(self.mods) or any(f"{m}_q" not in self.stats for m in self.mods):
            raise KeyError(f"patchcore state needs a bank and a scale for each of {self.mods}")
        self.to(self.device)

    def to(self, device: str) -> PatchCore:
        self._move_pipeline(device)
        self.stats = {k: v.to(device) for k, v in self.stats.items()}
        self.banks = {m: b.to(device) for m, b in self.banks.items()}
        self.nn = {m: NearestNeighbours(b) for m, b in self.banks.items()}
        return self

    @property
    def fused(self) -> bool:
        return len(self.mods) == 2

    # --- fit ------------------------------------------------------------------------------------
    def _bank(self, x: torch.Tensor, valid: torch.Tensor, coreset: bool = True) -> torch.Tensor:
        o = self.opts
        patches = x.permute(0, 2, 3, 1)[valid > 0]
        pool = random_subsample(patches, o.max_patches, o.seed)
        n = max(1, min(o.max_bank, int(len(pool) * o.coreset_ratio)))
        if not coreset:
            return random_subsample(pool, n, o.seed).contiguous()
        return pool[greedy_coreset(pool, n, seed=o.seed)].contiguous()

    def fit(self, frames: Iterable[FrameLike], progress: bool = True) -> PatchCore:
        frames = self._settle(frames)
        if len(frames) < 2:
            raise ValueError("patchcore needs at least 2 good frames to fit")
        with Progress(disable=not progress, transient=True) as bar:
            x, valid = self._gather(frames, bar, f"patchcore[{self.modality}]: features of good frames")
            self.stats = {}
            self._fit_standardisation(x, valid)
            self._fit_depth_share(valid)
            x = self._standardise(x)
            # Provisional fusion scales from every 5th frame against a bank of the others (calibrate()
            # re-fits them on validation frames); then the real bank from every frame.
            held = torch.zeros(len(frames), dtype=torch.bool)
            held[:: 5 if len(frames) >= 5 else 2] = True
            self.banks = {m: self._bank(x[m][~held], valid[m][~held], coreset=False) for m in self.mods}
            self.to(self.device)
            self._fit_fusion({m: v[held] for m, v in x.items()}, {m: v[held] for m, v in valid.items()})
            task = bar.add_task(f"patchcore[{self.modality}]: coreset", total=len(self.mods))
            banks = {}
            for m in self.mods:
                banks[m] = self._bank(x[m], valid[m])
                bar.advance(task)
            self.banks = banks
        return self.to(self.device)

    # --- score ----------------------------------------------------------------------------------
    def _modality_maps(self, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per modality, B×G×G distance of each patch to its nearest bank entry."""
        out = {}
        for m, f in x.items():
            b, _, g, _ = f.shape
            out[m] = self.nn[m](f.permute(0, 2, 3, 1).reshape(b * g * g, -1)).view(b, g, g)
        return out

    def _grid_maps(
        self, x: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The fused B×G×G map and (fused models) each modality's normalised map alone, for frames without the other."""
        maps = self._modality_maps(x)
        grid = fusion.fuse(maps, valid, self.stats, self.opts.fusion)
        alone = {m: fusion.fuse({m: maps[m]}, valid, self.stats) for m in maps} if self.fused else {}
        return grid, alone

    def _fit_fusion(self, x: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-modality scales and the degraded path's factor from good frames; returns their fused image scores."""
        o = self.opts
        maps: dict[str, list[torch.Tensor]] = {m: [] for m in self.mods}
        n = next(iter(x.values())).shape[0]
        for i in range(0, n, 8):
            for m, v in self._modality_maps({k: t[i : i + 8] for k, t in x.items()}).items():
                maps[m].append(v)
        full = {m: torch.cat(v) for m, v in maps.items()}
        self.stats.update(fusion.fit_scales(full, valid, o.quantile))
        fused = fusion.fuse(full, valid, self.stats, o.fusion)

        def image_scores(grid: torch.Tensor) -> torch.Tensor:
            return fusion.image_scores(grid, o.resolution, o.px(o.sigma))

        scores = image_scores(fused)
        if self.fused:
            rgb = image_scores(full["rgb"] / self.stats["rgb_q"])
            self.stats["degraded_scale"] = fusion.degraded_scale(scores, rgb)
            xyz = image_scores(fusion.fuse({"xyz": full["xyz"]}, valid, self.stats))
            self.stats["degraded_xyz_scale"] = fusion.degraded_scale(scores, xyz)
        return scores

    @torch.no_grad()
    def score(self, batch: Sequence[FrameLike]) -> AnomalyOutput:
        if not self.nn:
            raise RuntimeError("patchcore model is not fitted")
        prepared, feats, valid = self._features_on_device(batch)
        grid, alone = self._grid_maps(self._standardise(feats), valid)
        degraded = self._depth_missing(valid, self.opts.degraded_below)
        black = colour_missing(batch)
        no_colour = torch.from_numpy(black) & ~degraded if self.fused else torch.zeros_like(degraded)
        mods = [list(self.mods) for _ in batch]
        if degraded.any() and alone:  # no usable depth: the RGB map carries on, on the fused scale
            d = degraded.to(grid.device)
            grid[d] = alone["rgb"][d] * self.stats["degraded_scale"]
        if no_colour.any():  # a station without a colour camera: the 3D map carries on, on the fused scale
            c = no_colour.to(grid.device)
            grid[c] = alone["xyz"][c] * self.stats.get("degraded_xyz_scale", torch.tensor(1.0, device=grid.device))
        maps = self._to_maps(grid)
        scores = maps.reshape(len(batch), -1).max(1).astype(np.float32)
        for i in np.flatnonzero(degraded.numpy()):
            mods[i] = ["rgb"] if self.fused else []
            if not self.fused or black[i]:  # no usable cloud and nothing else: nothing to score with
                scores[i] = np.nan
        for i in np.flatnonzero(no_colour.numpy()):
            mods[i] = ["xyz"]
        flagged = [bool(d or c) for d, c in zip(degraded, no_colour, strict=True)]
        return AnomalyOutput(scores, self._frame_maps(maps, prepared), mods, degraded=flagged)

    # --- calibration ------------------------------------------------------------------------------
    def calibrate(self, good: Iterable[FrameLike], target_fpr: float = 0.01) -> float:
        """Re-fit the fusion scales on these held-out good frames, then the threshold on their scores."""
        good = list(good)
        with Progress(transient=True, disable=True) as bar:
            x, valid = self._gather(good, bar, "patchcore: calibration frames")
        with torch.no_grad():
            scores = self._fit_fusion(self._standardise(x), valid)
        self.threshold = threshold_from_scores(scores.cpu().numpy(), target_fpr)
        return self.threshold
