"""MAFR's network in pure torch: shared fusion encoder, attention-guided modality decoders, loss terms.

Operates on dense feature maps B×C×G×G. Widths are set from our feature sizes (EfficientNet-Lite0
152-d + FPFH 33-d), not the reference's DINO/Point-MAE 768/1152.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ChannelNorm(nn.Module):
    """LayerNorm over channels at every location of a B×C×H×W map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def mlp_block(cin: int, cout: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1), nn.GELU(), ChannelNorm(cout), nn.Dropout(dropout))


class FusionEncoder(nn.Module):
    """Concatenated per-location RGB+3D features -> one shared latent space."""

    def __init__(self, cin: int, hidden: int, latent: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(mlp_block(cin, hidden, dropout), mlp_block(hidden, latent, dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CBAM(nn.Module):
    """Channel attention (shared MLP over avg- and max-pooled maps) then spatial attention (7×7 conv over
    channel-wise avg and max) on a real 2D feature map. The reference applies CBAM to one token at a time
    (a 1×1 image), where the spatial branch sees nothing; here both branches see the whole grid."""

    def __init__(self, channels: int, reduction: int = 8, kernel: int = 7) -> None:
        super().__init__()
        mid = max(4, channels // reduction)
        self.mlp = nn.Sequential(nn.Conv2d(channels, mid, 1), nn.ReLU(inplace=True), nn.Conv2d(mid, channels, 1))
        self.spatial = nn.Conv2d(2, 1, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.mlp(x.mean((2, 3), keepdim=True)) + self.mlp(x.amax((2, 3), keepdim=True)))
        x = x * gate
        s = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(s))


class AttentionDecoder(nn.Module):
    """Shared latent -> one modality's features: MLP, CBAM, MLP, plus a linear skip path."""

    def __init__(self, latent: int, hidden: int, cout: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.inp = mlp_block(latent, hidden, dropout)
        self.attn = CBAM(hidden)
        self.out = nn.Sequential(nn.Conv2d(hidden, hidden, 1), nn.GELU(), nn.Conv2d(hidden, cout, 1))
        self.skip = nn.Conv2d(latent, cout, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.attn(self.inp(z))) + self.skip(z)


class MAFRNet(nn.Module):
    def __init__(self, dims: dict[str, int], hidden: int = 128, latent: int = 64, dropout: float = 0.1) -> None:
        super().__init__()
        self.order = sorted(dims)
        self.encoder = FusionEncoder(sum(dims.values()), hidden, latent, dropout)
        self.decoders = nn.ModuleDict({m: AttentionDecoder(latent, hidden, dims[m], dropout) for m in self.order})

    def forward(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        z = self.encoder(torch.cat([feats[m] for m in self.order], dim=1))
        return {m: self.decoders[m](z) for m in self.order}


# --- loss terms (each B×H×W before masking) ---------------------------------------------------


def zero_normalise(x: torch.Tensor) -> torch.Tensor:
    x = x - x.mean(1, keepdim=True)
    return x / (x.norm(dim=1, keepdim=True) + 1e-6)


def reconstruction_error(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Zero-normalised SSD per location: 0 for identical patterns, at most 4 (= 2·(1 - ZNCC))."""
    return ((zero_normalise(x) - zero_normalise(y)) ** 2).sum(1)


def l2_error(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Root mean square difference over channels per location (the authors' inference rule, the L2 norm of
    restored minus input, over the channel count so modalities of different widths weigh alike). Unlike the
    zero-normalised error it sees magnitude: a dent twice as deep restored to a normal one scores higher."""
    return ((x - y) ** 2).mean(1).add(1e-8).sqrt()


ERRORS = {"l2": l2_error, "znssd": reconstruction_error}


def edge_aware_smoothness(residual: torch.Tensor, guide: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Spatial gradients of the residual map, down-weighted where the input features have edges.

    ``residual`` and ``valid`` are B×H×W, ``guide`` the input B×C×H×W. Normal parts should be
    restored equally well everywhere except across real structure boundaries.
    """
    terms = []
    for dim in (1, 2):
        dr = (residual.diff(dim=dim)).abs()
        edge = guide.diff(dim=dim + 1).abs().mean(1)
        both = valid.narrow(dim, 1, valid.shape[dim] - 1) * valid.narrow(dim, 0, valid.shape[dim] - 1)
        terms.append((dr * torch.exp(-edge) * both).sum() / both.sum().clamp_min(1))
    return sum(terms) / 2


def soft_census(x: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Soft census transform: for each channel, is each location above its 3×3 neighbourhood mean?"""
    local = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    return torch.tanh((x - local) / temperature)


def census_loss(x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """L1 between the soft census transforms of input and restoration (local structure preserved)."""
    d = (soft_census(x) - soft_census(y)).abs().mean(1)
    return (d * valid).sum() / valid.sum().clamp_min(1)
