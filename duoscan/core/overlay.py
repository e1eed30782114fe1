"""Heatmap overlays for people: RGB with the anomaly map blended on top, region outlined."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# A perceptually ordered ramp (black -> purple -> orange -> yellow), like "inferno".
_STOPS = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], np.float32)


def colormap(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to RGB uint8."""
    v = np.clip(values, 0, 1) * (len(_STOPS) - 1)
    lo = np.floor(v).astype(int).clip(0, len(_STOPS) - 2)
    t = (v - lo)[..., None]
    return (_STOPS[lo] * (1 - t) + _STOPS[lo + 1] * t).astype(np.uint8)


def threshold_scaled(heatmap: np.ndarray, threshold: float) -> np.ndarray:
    """The map on the colour ramp's scale: the threshold sits mid-ramp (max-normalised without one)."""
    return heatmap / (2 * threshold) if threshold > 0 else heatmap / (heatmap.max() + 1e-9)


def blend(
    rgb: np.ndarray, heatmap: np.ndarray, threshold: float, bbox: tuple[int, int, int, int] | None = None
) -> Image.Image:
    """The heatmap blended over the RGB image (threshold mid-ramp), the region's box outlined in green.

    ``heatmap`` may be at another resolution than ``rgb`` (previews are smaller); it and ``bbox``
    (heatmap pixels) are rescaled to the image.
    """
    h, w = rgb.shape[:2]
    if heatmap.shape != (h, w):
        sy, sx = h / heatmap.shape[0], w / heatmap.shape[1]
        heatmap = np.asarray(Image.fromarray(heatmap.astype(np.float32)).resize((w, h), Image.BILINEAR))
        if bbox:
            bbox = (int(bbox[0] * sx), int(bbox[1] * sy), int((bbox[2] + 1) * sx) - 1, int((bbox[3] + 1) * sy) - 1)
    scaled = threshold_scaled(heatmap, threshold)
    colour = colormap(scaled)
    alpha = np.clip(scaled, 0.15, 0.75)[..., None]
    image = Image.fromarray((rgb * (1 - alpha) + colour * alpha).astype(np.uint8))
    if bbox:
        ImageDraw.Draw(image).rectangle(bbox, outline=(0, 255, 0), width=max(1, h // 128))
    return image


def render_depth(z: np.ndarray) -> np.ndarray:
    """An organized cloud's Z (H×W) as a colour image (2nd-98th percentile of valid points); holes black."""
    z = z.astype(np.float32)
    valid = np.isfinite(z) & (z != 0)
    out = np.zeros((*z.shape, 3), np.uint8)
    if valid.sum() > 1:
        lo, hi = np.percentile(z[valid], [2, 98])
        out[valid] = colormap((hi - z[valid]) / max(hi - lo, 1e-9))  # nearer = brighter
    return out


def overlay(
    rgb: np.ndarray, heatmap: np.ndarray, threshold: float, bbox: tuple[int, int, int, int] | None = None
) -> Image.Image:
    """RGB | blended heatmap side by side; the map is scaled so the threshold sits mid-ramp."""
    right = blend(rgb, heatmap, threshold, bbox)
    both = Image.new("RGB", (rgb.shape[1] * 2, rgb.shape[0]))
    both.paste(Image.fromarray(rgb), (0, 0))
    both.paste(right, (rgb.shape[1], 0))
    return both


def contact_sheet(paths: list[Path], out: Path, columns: int = 4) -> Path | None:
    if not paths:
        return None
    images = [Image.open(p) for p in paths]
    w, h = images[0].size
    rows = (len(images) + columns - 1) // columns
    sheet = Image.new("RGB", (w * min(columns, len(images)), h * rows), (255, 255, 255))
    for i, im in enumerate(images):
        sheet.paste(im.resize((w, h)), ((i % columns) * w, (i // columns) * h))
    sheet.save(out)
    return out
