"""Detection and localisation metrics with the field's official definitions.

* I-AUROC: ROC AUC of one score per sample.
* P-AUROC: ROC AUC over every test pixel.
* AUPRO@limit: the per-region-overlap curve of the MVTec evaluation code. Every connected
  ground-truth component (8-connectivity) counts equally; the curve is swept over every
  distinct score (no threshold binning), integrated from FPR 0 to ``limit`` with linear
  interpolation at the limit, and divided by ``limit``. Maps are compared at ground-truth
  resolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def image_auroc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the ROC of image scores; NaN when only one class is present."""
    labels = np.asarray(labels)
    if labels.min() == labels.max():
        return float("nan")
    from sklearn.metrics import roc_auc_score  # here: its import is 0.75 s that scoring never needs

    return float(roc_auc_score(labels, np.asarray(scores)))


def pixel_auroc(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray]) -> float:
    y = np.concatenate([m.ravel() for m in masks]).astype(np.uint8)
    if y.min() == y.max():
        return float("nan")
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, np.concatenate([m.ravel() for m in maps]).astype(np.float64)))


def pro_curve(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """False-positive rate and mean per-region overlap at every distinct score, descending."""
    fp_step, pro_step = [], []
    n_ok, n_regions = 0, 0
    for mask, amap in zip(masks, maps, strict=True):
        if mask.shape != amap.shape:
            raise ValueError(
                f"map {amap.shape} and ground truth {mask.shape} differ; compare at ground-truth resolution"
            )
        labels, n = ndimage.label(mask > 0, structure=np.ones((3, 3), bool))
        ok = labels == 0
        n_ok += int(ok.sum())
        n_regions += n
        pro = np.zeros(mask.shape, np.float64)
        if n:
            sizes = np.bincount(labels.ravel())
            pro[~ok] = 1.0 / sizes[labels[~ok]]
        fp_step.append(ok.ravel())
        pro_step.append(pro.ravel())
    if n_regions == 0 or n_ok == 0:
        raise ValueError("AUPRO needs at least one anomalous region and one normal pixel")
    scores = np.concatenate([m.ravel() for m in maps]).astype(np.float64)
    order = np.argsort(-scores, kind="stable")
    scores = scores[order]
    fpr = np.cumsum(np.concatenate(fp_step)[order]) / n_ok
    pro = np.cumsum(np.concatenate(pro_step)[order]) / n_regions
    last_of_tie = np.append(np.diff(scores) != 0, True)  # one point per distinct threshold
    return np.concatenate([[0.0], fpr[last_of_tie]]), np.concatenate([[0.0], pro[last_of_tie]])


def area_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoidal area under y(x) (x sorted) from x[0] to x_max, interpolating y linearly at x_max."""
    i = int(np.searchsorted(x, x_max, side="right"))
    area = float(np.sum(0.5 * (y[1:i] + y[: i - 1]) * np.diff(x[:i])))
    if 0 < i < len(x) and x[i - 1] < x_max:
        y_at = y[i - 1] + (y[i] - y[i - 1]) * (x_max - x[i - 1]) / (x[i] - x[i - 1])
        area += 0.5 * (y_at + y[i - 1]) * (x_max - x[i - 1])
    return area


def aupro(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray], limit: float = 0.3) -> float:
    """Normalised area under the PRO curve up to FPR ``limit`` (1.0 is perfect)."""
    fpr, pro = pro_curve(masks, maps)
    return area_to(fpr, pro, limit) / limit
