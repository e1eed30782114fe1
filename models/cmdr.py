"""CMDR-IAD — Cross-Modal mapping and Dual-branch Reconstruction (seed paper 001), fit/score loop.

Per location on the feature grid, a mapping network predicts 3D features from RGB and one predicts
RGB from 3D; one reconstruction network per modality restores its own features from a spatial
bottleneck (:mod:`models.cmdr_net`). All four are trained on good frames with a masked cosine loss.
At test time, with every distance divided by its mean on the training frames so the modalities
share a scale:

* mapping anomaly: J = d_map2d × d_map3d, gated by local reliability, A_map = σ(W·J)·J with
  W = 4 + 2·(7×7 std / mean of J);
* reconstruction anomaly: A_rec = (w2·d2 + w3·d3)/(w2 + w3) with w = exp(−α·d);
* ``fusion="both"``: A_map × A_rec (the paper's product), ``"map"`` or ``"rec"`` for the ablation;
* ``fusion="late"`` (default): each of the four distances over its 99th percentile on good
  validation frames, summed (:mod:`models.fusion`), RGB counted only on cells holding part points.
  The products above zero a defect that one modality misses; the sum keeps it.
Gaussian-smoothed, image score = max.

Modality flexibility: ``modality="rgb"`` / ``"xyz"`` train and run one reconstruction branch (the
mapping needs both). A fused model scoring a frame whose point cloud is empty or mostly invalid
(fewer valid 3D cells than ``degraded_below`` × the training frames' typical share) scores it with
the RGB reconstruction branch alone, rescaled onto the fused score's scale, and flags it degraded.
A 3D-only model given such a frame cannot score it and returns NaN (the worker dead-letters it).

Where we differ from the reference code, and why:
* Both reconstruction branches are small conv autoencoders over the grid; the reference's 3D
  decoder is a 79M-parameter Linear over the token sequence, and its repository does not import.
* Distances are divided by their training mean before fusion (the reference multiplies raw cosine
  distances, so α and W act on an arbitrary scale that depends on the backbones).
* 3D input defaults to FPFH with an L2 distance (``xyz_distance``): a cosine between a few 3D channels ignores
  magnitude, so a deeper dent of the same shape scored nothing more. Colour keeps the authors' cosine.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from rich.progress import Progress

from . import fusion as late
from .base import AnomalyOutput, FrameLike, register, threshold_from_scores
from .cmdr_net import DISTANCES, CMDRNet, confidence_weighted, masked_mean, reliability_gate
from .feature_method import NeuralFeatureMethod, NeuralOptions
from .preprocess import Prepared

FUSION = ("late", "both", "map", "rec")


@dataclass(frozen=True)
class CMDROptions(NeuralOptions):
    map_hidden: int = 128
    rec_hidden: int = 96
    bottleneck: int = 32
    levels: int = 2
    dropout: float = 0.1
    epochs: int = 60
    fusion: str = "late"
    alpha: float = 0.3
    degraded_below: float = 0.25
    xyz_features: str = "fpfh"
    rgb_distance: str = "cosine"
    xyz_distance: str = "l2"
    loss_mask: str = "xyz"  # all losses only where 3D is measured (authors'; level or better on the tuning seed); "own"
    gate: str = "local"  # the reliability gate's spread: local std / local mean, or the authors' rule
    normalise: bool = False  # CFM's image score: the map over the root of its mean non-zero value
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        **NeuralOptions.CHOICES,
        "fusion": FUSION,
        "loss_mask": ("xyz", "own"),
        "gate": ("local", "authors"),
        "rgb_distance": tuple(DISTANCES),
        "xyz_distance": tuple(DISTANCES),
    }


@register
class CMDR(NeuralFeatureMethod):
    name = "cmdr"

    Options = CMDROptions
    opts: CMDROptions

    def _net(self, dims: dict[str, int]) -> CMDRNet:
        o = self.opts
        return CMDRNet(dims, o.map_hidden, o.rec_hidden, o.bottleneck, o.levels, o.dropout)

    @property
    def fused(self) -> bool:
        return len(self.mods) == 2

    # --- distances ----------------------------------------------------------------------------
    def _distances(self, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Raw per-location distances: ``rec_<m>`` (reconstruction) and ``map_<m>`` (predicted from the other
        modality)."""
        assert self.net is not None
        rec, mapped = self.net(x)
        dist = {m: DISTANCES[getattr(self.opts, f"{m}_distance")] for m in self.mods}
        d = {f"rec_{m}": dist[m](rec[m], x[m]) for m in rec}
        d.update({f"map_{m}": dist[m](mapped[m], x[m]) for m in mapped})
        return d

    def loss(self, x: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]) -> torch.Tensor:
        """Sum of the masked cosine losses of the (up to) four networks."""
        d = self._distances(x)
        if self.fused and self.opts.loss_mask == "xyz":  # the authors': no loss where the part has no 3D point
            v = {k: valid["xyz"] for k in d}
        else:
            v = self._signal_validity(d, valid)
        return torch.stack([masked_mean(d[k], v[k]) for k in sorted(d)]).sum()

    # --- fit ------------------------------------------------------------------------------------
    def fit(self, frames: Iterable[FrameLike], progress: bool = True) -> CMDR:
        frames = self._settle(frames)
        with Progress(disable=not progress, transient=True) as bar:
            prepared: list[Prepared] = []
            x, vm = self._gather(frames, bar, f"cmdr[{self.modality}]: features of good frames", prepared)
            self._fit_standardisation(x, vm)
            x = self._standardise(x)
            self._train(x, vm, self.loss, bar)
            with torch.no_grad():  # each distance's mean on good frames: the common scale for fusion
                d = self._distances(x)
                for k, v in self._signal_validity(d, vm).items():
                    self.stats[f"{k}_mean"] = masked_mean(d[k], v).clamp_min(1e-6)
                self._fit_depth_share(vm)
                vm = self._part_gated(vm, prepared)
                self.stats.update(
                    late.fit_scales(d, self._signal_validity(d, vm), late.QUANTILE)
                )  # provisional; calibrate() re-fits
                if self.fused:  # until calibrate() sees validation frames, match the scales on the training frames
                    self._match_degraded_scale(*self._path_scores(x, vm))
        return self.to(self.device)

    # --- score ----------------------------------------------------------------------------------
    def _grid_maps(
        self, x: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """B×G×G anomaly on the grid from the model's inputs, and (fused models only) the
        RGB-only map used for frames without usable depth."""
        o = self.opts
        raw = self._distances(x)
        d = {k: v / self.stats[f"{k}_mean"] for k, v in raw.items()}
        if not self.fused:
            m = self.mods[0]
            return d[f"rec_{m}"] * valid[m], None
        if o.fusion == "late":  # each distance over its good-frame 99th percentile, summed (models.fusion)
            return late.fuse(raw, self._signal_validity(raw, valid), self.stats, "sum"), raw["rec_rgb"] / self.stats[
                "rec_rgb_q"
            ]
        v3 = valid["xyz"]
        a_map = reliability_gate(d["map_rgb"] * d["map_xyz"], v3, spread=o.gate)
        a_rec = confidence_weighted(d["rec_rgb"], d["rec_xyz"], v3, o.alpha)
        fused = {"both": a_map * a_rec, "map": a_map, "rec": a_rec}[o.fusion]
        return fused, d["rec_rgb"]

    @staticmethod
    def _signal_validity(d: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each distance counts where its own modality has data (``map_xyz`` where there are 3D points)."""
        return {k: valid[k.split("_", 1)[1]] for k in d}

    def _score_paths(self, batch: Sequence[FrameLike]) -> tuple[list, np.ndarray, np.ndarray | None, torch.Tensor]:
        if self.net is None:
            raise RuntimeError("cmdr model is not fitted")
        prepared, feats, valid = self._features_on_device(batch)
        fused, rgb_only = self._grid_maps(self._standardise(feats), self._part_gated(valid, prepared))
        return (
            prepared,
            self._smoothed(fused),
            None if rgb_only is None else self._smoothed(rgb_only),
            self._depth_missing(valid, self.opts.degraded_below),
        )

    def _smoothed(self, grid_map: torch.Tensor) -> np.ndarray:
        """Upsampled, smoothed maps; with ``normalise`` each over the root of its mean non-zero value (CFM)."""
        maps = self._to_maps(grid_map)
        return late.cfm_normalise(maps) if self.opts.normalise else maps

    @torch.no_grad()
    def score(self, batch: Sequence[FrameLike]) -> AnomalyOutput:
        prepared, maps, rgb_maps, degraded = self._score_paths(batch)
        mods = [list(self.mods) for _ in batch]
        scores = maps.reshape(len(batch), -1).max(1).astype(np.float32)
        for i in np.flatnonzero(degraded.numpy()):
            if rgb_maps is not None:  # fused model: the RGB branch carries on, on the fused scale
                maps[i] = rgb_maps[i] * float(self.stats["degraded_scale"])
                scores[i] = maps[i].max()
                mods[i] = ["rgb"]
            else:  # 3D-only model with no usable cloud: nothing to score with
                scores[i] = np.nan
                mods[i] = []
        return AnomalyOutput(scores, self._frame_maps(maps, prepared), mods, degraded=[bool(b) for b in degraded])

    # --- calibration ------------------------------------------------------------------------------
    def _path_scores(self, x: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
        """Fused and RGB-only image scores of standardised features, in chunks of 8 frames."""
        fused, rgb = [], []
        for i in range(0, next(iter(x.values())).shape[0], 8):
            f, g = self._grid_maps({m: v[i : i + 8] for m, v in x.items()}, {m: v[i : i + 8] for m, v in valid.items()})
            assert g is not None
            fused.append(self._smoothed(f).reshape(f.shape[0], -1).max(1))
            rgb.append(self._smoothed(g).reshape(g.shape[0], -1).max(1))
        return np.concatenate(fused), np.concatenate(rgb)

    def _match_degraded_scale(self, fused: np.ndarray, rgb: np.ndarray) -> None:
        """Set the factor that puts the RGB-only path on the fused scale (ratio of median image
        scores on good frames), so one threshold serves both."""
        self.stats["degraded_scale"] = torch.tensor(
            float(np.median(fused) / max(np.median(rgb), 1e-9)), device=self.device
        )

    def calibrate(self, good: Iterable[FrameLike], target_fpr: float = 0.01) -> float:
        """Fused models also re-fit the degraded path's scale on these (held-out) good frames."""
        if not self.fused:
            return super().calibrate(good, target_fpr)
        prepared: list[Prepared] = []
        with Progress(transient=True, disable=True) as bar:
            x, vm = self._gather(list(good), bar, "cmdr: calibration frames", prepared)
        vm = self._part_gated(vm, prepared)
        with torch.no_grad():
            x = self._standardise(x)
            if self.opts.fusion == "late":  # re-fit each distance's scale on these held-out frames first
                d = self._in_chunks(self._distances, x)
                self.stats.update(late.fit_scales(d, self._signal_validity(d, vm), late.QUANTILE))
            fused, rgb = self._path_scores(x, vm)
        self._match_degraded_scale(fused, rgb)
        self.threshold = threshold_from_scores(fused, target_fpr)
        return self.threshold
