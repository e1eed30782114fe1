"""Real photographs as a texture source for synthetic anomalies, from files that ship inside installed wheels.

BridgeNet's authors paste DTD textures; no dataset can be downloaded here, but scikit-image ships a dozen
photographs (brick, grass, gravel, coffee, fur, a rocket, a retina, ...) and scikit-learn two (a temple, a
flower). A model trained only on procedural textures learns to find procedural textures; real surfaces
(grain, fibre, dirt, print) are what a real defect looks like, so the texture generator draws from both.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

# (package, file) pairs; a package that is not installed contributes nothing
PHOTOS = (
    ("skimage", "data/brick.png"),
    ("skimage", "data/grass.png"),
    ("skimage", "data/gravel.png"),
    ("skimage", "data/coffee.png"),
    ("skimage", "data/chelsea.png"),
    ("skimage", "data/astronaut.png"),
    ("skimage", "data/rocket.jpg"),
    ("skimage", "data/retina.jpg"),
    ("skimage", "data/ihc.png"),
    ("skimage", "data/hubble_deep_field.jpg"),
    ("skimage", "data/moon.png"),
    ("skimage", "data/coins.png"),
    ("skimage", "data/camera.png"),
    ("skimage", "data/text.png"),
    ("skimage", "data/motorcycle_left.png"),
    ("sklearn", "datasets/images/china.jpg"),
    ("sklearn", "datasets/images/flower.jpg"),
)


def _package_dir(name: str) -> Path | None:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(name)
    return Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None


@lru_cache(maxsize=1)
def photo_library() -> tuple[np.ndarray, ...]:
    """The shipped photographs as H×W×3 float32 in [0, 1] (grey ones replicated), loaded once per process."""
    out = []
    for package, name in PHOTOS:
        root = _package_dir(package)
        if root is None or not (root / name).is_file():
            continue
        with Image.open(root / name) as im:
            out.append(np.asarray(im.convert("RGB"), np.float32) / 255)
    return tuple(out)


def photo_texture(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray | None:
    """An H×W×3 float texture in [0, 1]: a random crop of a random photograph at a random scale (0.5-2×),
    flipped and turned by a multiple of 90°. None when no photograph is installed."""
    library = photo_library()
    if not library:
        return None
    photo = library[int(rng.integers(len(library)))]
    h, w = shape
    scale = float(2 ** rng.uniform(-1, 1))
    ch, cw = min(photo.shape[0], max(8, round(h / scale))), min(photo.shape[1], max(8, round(w / scale)))
    y, x = int(rng.integers(photo.shape[0] - ch + 1)), int(rng.integers(photo.shape[1] - cw + 1))
    crop = Image.fromarray((photo[y : y + ch, x : x + cw] * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)
    out = np.asarray(crop, np.float32) / 255
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(np.rot90(out, int(rng.integers(4))) if h == w else out)
