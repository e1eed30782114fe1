"""CMDR-IAD's networks in pure torch: cross-modal mapping, per-modality reconstruction, fusion maps.

All operate on dense feature maps B×C×G×G. The reference's 3D decoder is a 79M-parameter Linear over
the whole 50176-token sequence; here both reconstruction branches are small convolutional
autoencoders over the feature grid (0.58 M parameters for all four networks with our 152-d RGB and
3-d geometry features), whose spatial bottleneck is what stops them from copying anomalies through.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .mafr_net import ChannelNorm, l2_error


class MappingNet(nn.Module):
    """Per-location map from one modality's features to the other's: in -> hidden, ``depth`` ×
    [1×1 conv, GELU, LayerNorm], -> out. Per location on purpose: the mapping models the
    appearance-geometry correspondence at a point, not its neighbourhood."""

    def __init__(self, cin: int, cout: int, hidden: int = 128, depth: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(cin, hidden, 1)]
        for _ in range(depth):
            layers += [nn.GELU(), ChannelNorm(hidden), nn.Conv2d(hidden, hidden, 1)]
        layers += [nn.GELU(), nn.Conv2d(hidden, cout, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.GroupNorm(1, cout), nn.GELU())


class ReconstructionNet(nn.Module):
    """Convolutional autoencoder over one modality's feature grid.

    1×1 projection to ``hidden``, ``levels`` stride-2 3×3 convs down to a ``bottleneck``-channel map
    (28 -> 14 -> 7 for two levels), then bilinear upsampling and 3×3 convs back, and a 1×1 conv to
    the input's channels. No skip connections: a skip would let an anomaly pass straight through.
    """

    def __init__(
        self, channels: int, hidden: int = 96, bottleneck: int = 32, levels: int = 2, dropout: float = 0.1
    ) -> None:
        super().__init__()
        down: list[nn.Module] = [nn.Conv2d(channels, hidden, 1), nn.GELU(), nn.Dropout2d(dropout)]
        for i in range(levels):
            down.append(_conv(hidden, bottleneck if i == levels - 1 else hidden, stride=2))
        self.down = nn.Sequential(*down)
        self.up = nn.ModuleList(_conv(bottleneck if i == 0 else hidden, hidden) for i in range(levels))
        self.out = nn.Conv2d(hidden, channels, 1)
        self.levels = levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sizes = [x.shape[-2:]]
        for _ in range(self.levels - 1):  # the sizes each up-step returns to (odd grids round up)
            sizes.append(((sizes[-1][0] + 1) // 2, (sizes[-1][1] + 1) // 2))
        z = self.down(x)
        for block, size in zip(self.up, reversed(sizes), strict=True):
            z = block(F.interpolate(z, size=size, mode="bilinear", align_corners=False))
        return self.out(z)


class CMDRNet(nn.Module):
    """The four networks. Trained jointly on the sum of their masked cosine losses, which — as their
    parameters are disjoint and Adam is per-parameter — is the same as the reference's four optimisers."""

    def __init__(
        self,
        dims: dict[str, int],
        map_hidden: int = 128,
        rec_hidden: int = 96,
        bottleneck: int = 32,
        levels: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.mods = sorted(dims)
        self.rec = nn.ModuleDict(
            {m: ReconstructionNet(dims[m], rec_hidden, bottleneck, levels, dropout) for m in self.mods}
        )
        self.maps = nn.ModuleDict()
        if len(self.mods) == 2:  # cross-modal mapping needs both inputs
            self.maps["rgb"] = MappingNet(dims["xyz"], dims["rgb"], map_hidden)  # 3D -> 2D
            self.maps["xyz"] = MappingNet(dims["rgb"], dims["xyz"], map_hidden)  # 2D -> 3D

    def forward(self, x: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(reconstructions, cross-modal predictions), both keyed by the modality they predict."""
        rec = {m: self.rec[m](x[m]) for m in self.mods}
        mapped = {"rgb": self.maps["rgb"](x["xyz"]), "xyz": self.maps["xyz"](x["rgb"])} if len(self.maps) else {}
        return rec, mapped


# --- distances and fusion (each B×G×G) ----------------------------------------------------------


def cosine_distance(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity per location, in [0, 2]."""
    return 1 - F.cosine_similarity(pred, target, dim=1, eps=1e-6)


DISTANCES = {"cosine": cosine_distance, "l2": l2_error}


def masked_mean(d: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    return (d * valid).sum() / valid.sum().clamp_min(1)


def reliability_gate(
    j: torch.Tensor,
    valid: torch.Tensor,
    window: int = 7,
    base: float = 4.0,
    gain: float = 2.0,
    spread: str = "local",
) -> torch.Tensor:
    """A_map = σ(W·J)·J with W = base + gain·s over valid cells in a ``window``² neighbourhood: discrepancies that
    stand out from their surroundings are trusted more. ``spread`` picks s: ``local`` = local std / local mean of J;
    ``authors`` = local deviation from the frame's mean J over its frame-mean (the authors' ``inference.py``)."""
    j = j * valid
    pad = window // 2
    pool = lambda t: F.avg_pool2d(t[:, None], window, 1, pad, count_include_pad=True)[:, 0]  # noqa: E731
    count = pool(valid).clamp_min(1e-6)
    if spread == "authors":
        frame_mean = (j.sum((1, 2)) / valid.sum((1, 2)).clamp_min(1))[:, None, None]
        local = (pool(((j - frame_mean) * valid) ** 2) / count).sqrt()
        cells = valid.sum((1, 2)).clamp_min(1)[:, None, None]
        w = base + gain * local / ((local * valid).sum((1, 2))[:, None, None] / cells).clamp_min(1e-8)
    else:
        mean = pool(j) / count
        std = (pool(j * j) / count - mean * mean).clamp_min(0).sqrt()
        w = base + gain * std / mean.clamp_min(1e-6)
    return torch.sigmoid(w * j) * j


def confidence_weighted(d2: torch.Tensor, d3: torch.Tensor, valid3: torch.Tensor, alpha: float = 0.3) -> torch.Tensor:
    """A_rec = (w2·d2 + w3·d3)/(w2 + w3), w = exp(-α·d); where there is no 3D point only d2 counts."""
    w2 = torch.exp(-alpha * d2)
    w3 = torch.exp(-alpha * d3) * valid3
    return (w2 * d2 + w3 * d3 * valid3) / (w2 + w3)
