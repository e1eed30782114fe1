"""BridgeNet's network in pure torch: a feature adaptor and a per-location discriminator, shared by
RGB and visible depth (``share=True``) or one pair per modality (the ablation), plus the loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def adaptor(channels: int) -> nn.Module:
    """One linear projection per location (the reference's shared Linear), as a 1×1 conv."""
    return nn.Conv2d(channels, channels, 1)


def discriminator(channels: int, hidden: int) -> nn.Module:
    """Three per-location layers to one anomaly logit. GroupNorm, not BatchNorm: a worker's batch
    of one frame must score like a training batch."""
    return nn.Sequential(
        nn.Conv2d(channels, hidden, 1),
        nn.GroupNorm(1, hidden),
        nn.LeakyReLU(0.2),
        nn.Conv2d(hidden, hidden, 1),
        nn.GroupNorm(1, hidden),
        nn.LeakyReLU(0.2),
        nn.Conv2d(hidden, 1, 1),
    )


class BridgeNetNet(nn.Module):
    """``concat`` (the authors' fusion): both modalities' features concatenated per location, one adaptor and one
    discriminator, one logit map (key ``fused``). Otherwise one adaptor + discriminator per modality, shared
    (``share``, same weights for RGB and depth) or not, one logit map per modality."""

    def __init__(self, dims: dict[str, int], hidden: int = 128, share: bool = True, concat: bool = False) -> None:
        super().__init__()
        self.mods, self.share, self.concat = sorted(dims), share, concat and len(dims) == 2
        if self.concat:
            c = sum(dims.values())
            self.adaptor, self.disc = adaptor(c), discriminator(c, hidden)
        elif share:
            if len(set(dims.values())) != 1:
                raise ValueError(f"sharing parameters needs equal feature sizes per modality, got {dims}")
            c = next(iter(dims.values()))
            self.adaptor, self.disc = adaptor(c), discriminator(c, hidden)
        else:
            self.adaptors = nn.ModuleDict({m: adaptor(dims[m]) for m in self.mods})
            self.discs = nn.ModuleDict({m: discriminator(dims[m], hidden) for m in self.mods})

    def forward(self, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per modality (or ``fused``), B×G×G anomaly logits."""
        if self.concat:
            return {"fused": self.disc(self.adaptor(torch.cat([x[m] for m in self.mods], 1)))[:, 0]}
        if self.share:
            return {m: self.disc(self.adaptor(x[m]))[:, 0] for m in x}
        return {m: self.discs[m](self.adaptors[m](x[m]))[:, 0] for m in x}


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Binary focal loss (soft targets allowed): BCE down-weighted where the prediction is already right."""
    p = torch.sigmoid(logits)
    pt = p * target + (1 - p) * (1 - target)
    return ((1 - pt) ** gamma * F.binary_cross_entropy_with_logits(logits, target, reduction="none")).mean()


def bce_focal(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, target) + focal_loss(logits, target)
