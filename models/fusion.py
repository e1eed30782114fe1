"""Late fusion of per-modality anomaly maps (M3DM / G2SF style), written once for every method.

Each modality's grid map is divided by a high quantile of that modality's map on good frames,
so "1" means "as unusual as the rarest normal patch" in both modalities; the normalised maps
are then summed. Summing keeps a defect that only one modality sees (a stain, a shallow dent),
which a product of maps would zero out wherever the other modality is quiet.

A frame whose point cloud is empty or mostly invalid is scored by the RGB map alone, rescaled
onto the fused scale (ratio of median image scores on good frames), and flagged degraded.
"""

from __future__ import annotations

import numpy as np
import torch

from .components import smooth_maps

FUSIONS = ("sum", "max", "product")
QUANTILE = 0.99  # "1" = as unusual as the rarest 1 % of good patches


def map_quantile(maps: torch.Tensor, valid: torch.Tensor, q: float) -> torch.Tensor:
    """The ``q`` quantile of ``maps`` (B×G×G) over valid cells; at most 1e6 values are used."""
    values = maps[valid > 0].float()
    if values.numel() == 0:
        return torch.ones((), device=maps.device)
    if values.numel() > 1_000_000:
        values = values[
            torch.randperm(values.numel(), generator=torch.Generator().manual_seed(0))[:1_000_000].to(values.device)
        ]
    return torch.quantile(values, q).clamp_min(1e-6)


def fit_scales(maps: dict[str, torch.Tensor], valid: dict[str, torch.Tensor], q: float) -> dict[str, torch.Tensor]:
    """``{"<m>_q": quantile}`` per modality, from maps of good frames."""
    return {f"{m}_q": map_quantile(maps[m], valid[m], q) for m in maps}


def fuse(
    maps: dict[str, torch.Tensor], valid: dict[str, torch.Tensor], stats: dict[str, torch.Tensor], how: str = "sum"
) -> torch.Tensor:
    """B×G×G fused map: each modality divided by its scale and zeroed where it has no data, then combined."""
    norm = [maps[m] / stats[f"{m}_q"] * (valid[m] > 0) for m in sorted(maps)]
    if len(norm) == 1:
        return norm[0]
    if how == "sum":
        return torch.stack(norm).sum(0)
    if how == "max":
        return torch.stack(norm).amax(0)
    if how == "product":
        return torch.stack(norm).prod(0)
    raise ValueError(f"fusion must be one of {FUSIONS}, not {how!r}")


def image_scores(grid_map: torch.Tensor, resolution: int, sigma: float) -> torch.Tensor:
    """B image scores: the maximum of the upsampled, smoothed map (as the scored maps are made)."""
    return smooth_maps(grid_map, resolution, sigma).flatten(1).amax(1)


def cfm_factor(maps: np.ndarray) -> np.ndarray:
    """B×1×1: the square root of each map's mean non-zero value, which CFM, MAFR and CMDR-IAD's code divide their
    maps by before the image score (a map high everywhere counts less than one with a single peak)."""
    nz = maps > 0
    mean = (maps * nz).sum((1, 2)) / np.maximum(nz.sum((1, 2)), 1)
    return np.sqrt(mean).clip(1e-6)[:, None, None]


def cfm_normalise(maps: np.ndarray) -> np.ndarray:
    """B×H×W maps over their :func:`cfm_factor`."""
    return maps / cfm_factor(maps)


def degraded_scale(fused_scores: torch.Tensor, rgb_scores: torch.Tensor) -> torch.Tensor:
    """Factor that puts RGB-only image scores on the fused scale (ratio of medians on good frames)."""
    return fused_scores.median() / rgb_scores.median().clamp_min(1e-9)
