"""Visible depth (BridgeNet): the point cloud as an image any RGB backbone can read.

Height of each foreground point above the fitted background plane, min-max normalised on the
foreground, holes inside the part filled from their nearest measured neighbour, background 0.
"""

from __future__ import annotations

import numpy as np

from .components import fill_invalid, label_each
from .preprocess import Prepared

FOREGROUND_FLOOR = 0.2  # the lowest foreground point maps here, so the silhouette stays apart from the black background


def part_region(valid: np.ndarray) -> np.ndarray:
    """The part's silhouette: measured foreground, closed and with interior holes filled (:func:`part_regions`
    of one mask)."""
    return part_regions(valid[None])[0]


_DIAMOND = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if abs(dy) + abs(dx) <= 2]


def part_regions(valid: np.ndarray) -> np.ndarray:
    """B×H×W foreground masks -> their silhouettes: closed twice with the 4-neighbour cross (a dilation and then an
    erosion by its radius-2 diamond, nothing outside the image, as SciPy's ``binary_closing(iterations=2)``), interior
    holes filled (background not 4-connected to the image border, as ``binary_fill_holes``), plus the foreground.
    The batch in one set of array operations and one labelling (:func:`~.components.label_each`)."""
    b, h, w = valid.shape
    padded = np.zeros((b, h + 4, w + 4), bool)
    padded[:, 2:-2, 2:-2] = valid
    grown = np.zeros_like(padded)
    for dy, dx in _DIAMOND:  # the dilation: within the image only, as the erosion that follows sees it
        grown[:, 2:-2, 2:-2] |= padded[:, 2 + dy : 2 + dy + h, 2 + dx : 2 + dx + w]
    closed = np.ones_like(valid)
    for dy, dx in _DIAMOND:
        closed &= grown[:, 2 + dy : 2 + dy + h, 2 + dx : 2 + dx + w]
    labels, _ = label_each(~closed)
    outside = np.unique(np.concatenate([labels[:, [0, -1]].ravel(), labels[:, :, [0, -1]].ravel()]))
    return closed | ~np.isin(labels, outside) | valid


def height_map(p: Prepared) -> np.ndarray:
    """Height above the background plane (towards the camera) of every foreground point; 0 elsewhere.
    Without a plane, depth below the nearest point is used instead."""
    if not p.valid.any():
        return np.zeros(p.valid.shape, np.float32)
    if p.plane is not None:
        n, d = p.plane[:3], float(p.plane[3])
        h = (p.xyz @ n + d) * (1.0 if d > 0 else -1.0)  # the camera sits at the origin: its side is positive
    else:
        h = -p.xyz[..., 2]
    return np.where(p.valid, h, 0).astype(np.float32)


def visible_depth(p: Prepared, region: np.ndarray | None = None) -> np.ndarray:
    """R×R float32 in [0, 1]: the normalised, hole-filled height of the part; 0 on the background.

    Normalisation uses the 1st and 99th percentiles of the foreground (a few noisy points
    would otherwise set the range) and maps them to [FOREGROUND_FLOOR, 1].
    """
    valid = p.valid
    out = np.zeros(valid.shape, np.float32)
    if valid.sum() < 10:
        return out
    h = height_map(p)
    lo, hi = np.percentile(h[valid], [1, 99])
    norm = FOREGROUND_FLOOR + (1 - FOREGROUND_FLOOR) * np.clip((h - lo) / max(hi - lo, 1e-12), 0, 1)
    region = part_region(valid) if region is None else region
    filled = fill_invalid(np.where(valid, norm, 0).astype(np.float32), valid)
    out[region] = filled[region]
    return out


def grey_image(values: np.ndarray) -> np.ndarray:
    """An R×R map in [0, 1] as an R×R×3 uint8 image (grey in all three channels), as backbones read it."""
    return np.repeat((values * 255).round().astype(np.uint8)[..., None], 3, axis=2)


def depth_image(p: Prepared, region: np.ndarray | None = None) -> np.ndarray:
    """The visible depth as an image (``region``: the part's silhouette, when the caller has it already)."""
    return grey_image(visible_depth(p, region))
