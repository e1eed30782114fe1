"""MAFR — Multi-Modal Attention-Driven Fusion Restoration (seed paper 000), fit/score loop.

Dense RGB and 3D feature maps are standardised per modality, fused by a shared encoder
into one latent space and restored by one attention-guided decoder per modality
(:mod:`models.mafr_net`). Trained on good frames only with a composite loss; the anomaly
map is the per-location restoration error.

Fusion (``combine``): the default ``late`` divides each modality's error by its 99th percentile on
good validation frames and sums them (:mod:`models.fusion`), RGB counted only on cells holding part
points. The paper's ``product`` zeroes a defect that only one modality sees (a stain under
coaxial light, a dent that does not shade), kept as an option.

Choices where the reference code is broken or disagrees with the paper:
* CBAM runs on the whole feature grid (channel *and* spatial attention); the reference
  applies it to a 1×1 image per token, so its spatial branch is inert.
* The census term is a real (soft) census transform compared between input and restoration;
  the reference's "census" is an L1 between 7×7 average-pooled maps. The smoothness term uses
  every channel of the input as its edge guide, not just channels 0 and 1.
* Loss terms are weighted (``w_rec``, ``w_smooth``, ``w_census``); the reference sums them unweighted.
* Training runs with any batch size (the reference crashes above 1), and epoch count and
  checkpoint are one setting, fixed before looking at any test data.
* Only valid pixels count: the 3D terms use the 3D validity mask, the RGB terms every pixel.

3D input: ``xyz_features`` picks registry extractors ('+'-joined); the default is FPFH, as the authors
restore a point-cloud descriptor (Point-MAE). Errors (``rgb_error``, ``xyz_error``): the authors score the L2
norm of restored minus input. 3D uses it: with a few channels a zero-normalised error is blind to magnitude (a
dent twice as deep restores to the same pattern). Colour keeps the zero-normalised error, which ignores the gain
that lighting puts on feature magnitudes. Both chosen on the standard profile's tuning seed (bracket, cookie, potato;
I-AUROC / AUPRO@30 %): geometry + znssd 0.550 / 0.830, geometry + l2 0.689 / 0.831, geometry + 3D l2 0.709 / 0.841,
FPFH + 3D l2 0.798 / 0.885 (patchcore:both 0.804 / 0.879). Under the old zero-normalised error FPFH had lost.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from rich.progress import Progress

from . import fusion
from .base import AnomalyOutput, FrameLike, register, threshold_from_scores
from .feature_method import NeuralFeatureMethod, NeuralOptions
from .mafr_net import ERRORS, MAFRNet, census_loss, edge_aware_smoothness
from .preprocess import Prepared

COMBINE = ("late", "product", "sum", "max")


@dataclass(frozen=True)
class MAFROptions(NeuralOptions):
    hidden: int = 128
    latent: int = 64
    dropout: float = 0.1
    epochs: int = 80
    w_rec: float = 1.0
    w_smooth: float = 0.1
    w_census: float = 0.5
    combine: str = "late"
    normalise: bool = False
    denoise: float = 0.0
    xyz_features: str = "fpfh"
    rgb_error: str = "znssd"
    xyz_error: str = "l2"
    score_sigma: float = 8.0
    seed: int = 115
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        **NeuralOptions.CHOICES,
        "combine": COMBINE,
        "rgb_error": tuple(ERRORS),
        "xyz_error": tuple(ERRORS),
    }


@register
class MAFR(NeuralFeatureMethod):
    name = "mafr"

    Options = MAFROptions
    opts: MAFROptions

    def _net(self, dims: dict[str, int]) -> MAFRNet:
        o = self.opts
        return MAFRNet(dims, o.hidden, o.latent, o.dropout)

    def _error(self, m: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-location restoration error of modality ``m`` (``rgb_error`` / ``xyz_error``)."""
        return ERRORS[getattr(self.opts, f"{m}_error")](x, y)

    def _errors(self, x: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {m: self._error(m, x[m], y[m]) for m in self.mods}

    def loss(
        self, x: dict[str, torch.Tensor], y: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        o = self.opts
        terms = {
            "rec": torch.zeros((), device=self.device),
            "smooth": torch.zeros((), device=self.device),
            "census": torch.zeros((), device=self.device),
        }
        for m in self.mods:
            err = self._error(m, x[m], y[m])
            terms["rec"] = terms["rec"] + (err * valid[m]).sum() / valid[m].sum().clamp_min(1)
            terms["smooth"] = terms["smooth"] + edge_aware_smoothness(err, x[m], valid[m])
            terms["census"] = terms["census"] + census_loss(x[m], y[m], valid[m])
        terms["total"] = o.w_rec * terms["rec"] + o.w_smooth * terms["smooth"] + o.w_census * terms["census"]
        return terms

    # --- fit / score ------------------------------------------------------------------------
    def fit(self, frames: Iterable[FrameLike], progress: bool = True) -> MAFR:
        frames = self._settle(frames)
        o = self.opts
        with Progress(disable=not progress, transient=True) as bar:
            prepared: list[Prepared] = []
            x, vm = self._gather(frames, bar, f"mafr[{self.modality}]: features of good frames", prepared)
            self._fit_standardisation(x, vm)
            x = self._standardise(x)

            def batch_loss(xb: dict[str, torch.Tensor], vb: dict[str, torch.Tensor]) -> torch.Tensor:
                # denoising: restore clean features from corrupted ones, so restoration pulls
                # towards normal patterns instead of copying whatever comes in
                inp = {m: v + o.denoise * torch.randn_like(v) for m, v in xb.items()} if o.denoise else xb
                return self.loss(xb, self.net(inp), vb)["total"]

            self._train(x, vm, batch_loss, bar)
            with torch.no_grad():  # typical error per modality, so sum/max combine comparable scales
                err = self._errors(x, self.net(x))
                for m in self.mods:
                    self.stats[f"{m}_err"] = ((err[m] * vm[m]).sum() / vm[m].sum().clamp_min(1)).clamp_min(1e-6)
                # provisional late-fusion scales from the training frames; calibrate() re-fits them on held-out ones
                self.stats.update(fusion.fit_scales(err, self._part_gated(vm, prepared), fusion.QUANTILE))
        return self.to(self.device)

    def _combine(self, err: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]) -> torch.Tensor:
        """B×G×G anomaly from the per-modality restoration errors, combined as ``combine`` says."""
        combine = self.opts.combine
        if combine == "late":  # each modality over its good-frame 99th percentile, summed (models.fusion)
            return fusion.fuse(err, valid, self.stats, "sum")
        d = {m: err[m] / self.stats[f"{m}_err"] * valid[m] for m in self.mods}
        if len(self.mods) == 1:
            return d[self.mods[0]]
        if combine == "product":
            return d["rgb"] * d["xyz"]  # the paper's: zero where there is no 3D point, as the anchors do
        if combine == "sum":
            return d["rgb"] + d["xyz"]
        return torch.maximum(d["rgb"], d["xyz"])

    def _grid_map(self, x: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]) -> torch.Tensor:
        """B×G×G anomaly from standardised features."""
        return self._combine(self._errors(x, self.net(x)), valid)

    def _valid_for(self, valid: dict[str, torch.Tensor], prepared: Sequence[Prepared]) -> dict[str, torch.Tensor]:
        """Late fusion counts RGB on the part's cells only; the other combinations keep ``valid``."""
        return self._part_gated(valid, prepared) if self.opts.combine == "late" else valid

    def _maps(self, grid_map: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """The heatmaps (σ = ``sigma``) and the image scores (max of the map at σ = ``score_sigma``).

        The image score reads a more smoothed map: restoration noise is uncorrelated from cell to cell,
        a defect is not, so averaging over a wider neighbourhood separates them (chosen on the tuning sets)."""
        o = self.opts
        smooth = self._to_maps(grid_map)
        wide = smooth if o.score_sigma == o.sigma else self._to_maps(grid_map, o.score_sigma)
        if o.normalise:  # CFM/MAFR: divide by the root of the image's mean non-zero score
            factor = fusion.cfm_factor(smooth)
            smooth, wide = smooth / factor, wide / factor
        return smooth, wide.reshape(len(wide), -1).max(1).astype(np.float32)

    def calibrate(self, good: Iterable[FrameLike], target_fpr: float = 0.01) -> float:
        """Late fusion first re-fits each modality's scale on these held-out good frames; then the
        threshold from their image scores (one feature pass for both)."""
        if self.net is None:
            raise RuntimeError("mafr model is not fitted")
        prepared: list[Prepared] = []
        with Progress(transient=True, disable=True) as bar:
            x, vm = self._gather(list(good), bar, "mafr: calibration frames", prepared)
        vm = self._valid_for(vm, prepared)
        with torch.no_grad():
            err = self._in_chunks(lambda c: self._errors(c, self.net(c)), self._standardise(x))
            if self.opts.combine == "late":
                self.stats.update(fusion.fit_scales(err, vm, fusion.QUANTILE))
            _, scores = self._maps(self._combine(err, vm))
        self.threshold = threshold_from_scores(scores, target_fpr)
        return self.threshold

    @torch.no_grad()
    def score(self, batch: Sequence[FrameLike]) -> AnomalyOutput:
        if self.net is None:
            raise RuntimeError("mafr model is not fitted")
        prepared, feats, valid = self._features_on_device(batch)
        smooth, scores = self._maps(self._grid_map(self._standardise(feats), self._valid_for(valid, prepared)))
        return AnomalyOutput(scores, self._frame_maps(smooth, prepared), [list(self.mods)] * len(batch))
