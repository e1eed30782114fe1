"""Paired bootstrap of the test metrics, so a difference between two methods is read from an interval.

Every method evaluated on a category gets the *same* resampled test sets (the draws depend only on the
labels and a seed), so the difference of two methods' metrics on one draw is a paired difference, and its
2.5/97.5 percentiles over the draws are a 95 % interval. Resampling is stratified (good and defective
frames each resampled to their own count), as an AUROC needs both classes in every draw.

Each draw is a vector of frame multiplicities; the metrics take them as weights, so no draw copies a map:
I-AUROC is a weighted Mann-Whitney statistic, AUPRO the PRO curve of :mod:`models.metrics` with each
pixel counted as often as its frame was drawn (one global sort order serves every draw).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from .metrics import area_to

DRAWS = 1000
BINS = 4096


def stratified_weights(labels: Sequence[int], draws: int = DRAWS, seed: int = 0) -> np.ndarray:
    """(draws, frames) multiplicities: good and defective frames each resampled with replacement."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    w = np.zeros((draws, len(labels)), np.float64)
    for cls in (0, 1):
        idx = np.flatnonzero(labels == cls)
        if len(idx):
            w[:, idx] = rng.multinomial(len(idx), np.full(len(idx), 1 / len(idx)), size=draws)
    return w


def image_auroc_draws(labels: Sequence[int], scores: Sequence[float], weights: np.ndarray) -> np.ndarray:
    """Weighted I-AUROC per draw: P(defective score > good score), ties counting one half."""
    labels, scores = np.asarray(labels), np.asarray(scores, np.float64)
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    wp, wn = weights[:, labels == 1], weights[:, labels == 0]
    return np.einsum("dp,pn,dn->d", wp, wins, wn) / (wp.sum(1) * wn.sum(1))


def aupro_draws(
    masks: Sequence[np.ndarray], maps: Sequence[np.ndarray], weights: np.ndarray, limit: float = 0.3, bins: int = BINS
) -> np.ndarray:
    """AUPRO up to FPR ``limit`` per draw.

    Pixels are binned at ``bins`` quantiles of the normal pixels' scores over the top ``2·limit`` of them, so
    each frame is two histograms (normal pixels; each defect region's share, summing to 1 per region) and a
    draw is one weighted sum of histograms: the curve is exact at every bin edge and linear between them
    (a tie, as the exact metric treats one), within ~1e-3 of :func:`models.metrics.aupro` at unit weights."""
    labelled = [ndimage.label(m > 0, structure=np.ones((3, 3), bool)) for m in masks]
    normal = np.concatenate([a[lab == 0].ravel() for a, (lab, _) in zip(maps, labelled, strict=True)])
    top = min(1.0, 2 * limit)
    edges = np.unique(np.quantile(normal, np.linspace(1.0, 1.0 - top, bins + 1)))[::-1]  # descending
    n = len(edges)  # bin k holds scores in (edges[k], edges[k-1]]; bin n everything at or below the last edge
    ok_hist = np.zeros((len(masks), n + 1))
    pro_hist = np.zeros((len(masks), n + 1))
    for i, (amap, (lab, count)) in enumerate(zip(maps, labelled, strict=True)):
        k = np.searchsorted(-edges, -amap.ravel().astype(np.float64), side="left")
        flat = lab.ravel()
        ok_hist[i] = np.bincount(k[flat == 0], minlength=n + 1)
        if count:
            share = 1.0 / np.bincount(flat)[flat[flat > 0]]
            pro_hist[i] = np.bincount(k[flat > 0], weights=share, minlength=n + 1)
    n_regions = np.array([c for _, c in labelled], np.float64)
    fpr = np.cumsum(weights @ ok_hist, 1) / (weights @ ok_hist.sum(1))[:, None]
    pro = np.cumsum(weights @ pro_hist, 1) / (weights @ n_regions)[:, None]
    zero = np.zeros((len(weights), 1))
    fpr, pro = np.hstack([zero, fpr]), np.hstack([zero, pro])
    return np.array([area_to(f, p, limit) / limit for f, p in zip(fpr, pro, strict=True)])


def interval(draws: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap draws."""
    lo, hi = np.percentile(draws, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)
