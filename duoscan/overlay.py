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


def overlay(rgb: np.ndarray, heatmap: np.ndarray, threshold: float, bbox: tuple[int, int, int, int] | None = None) -> Image.Image:
    """RGB | blended heatmap side by side; the map is scaled so the threshold sits mid-ramp."""
    scaled = heatmap / (2 * threshold) if threshold > 0 else heatmap / (heatmap.max() + 1e-9)
    colour = colormap(scaled)
    alpha = np.clip(scaled, 0.15, 0.75)[..., None]
    blend = (rgb * (1 - alpha) + colour * alpha).astype(np.uint8)
    right = Image.fromarray(blend)
    if bbox:
        ImageDraw.Draw(right).rectangle(bbox, outline=(0, 255, 0), width=max(1, rgb.shape[0] // 128))
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
