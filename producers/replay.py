"""Frame sources for ``duoscan produce``: a synthetic stream or an MVTec-layout folder."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

from duoscan.schemas import Frame

from .dataset import categories_in, iter_dataset
from .synthetic import CATEGORIES, part_stream


def synthetic_frames(
    line: str,
    station: str,
    categories: tuple[str, ...] = CATEGORIES,
    seed: int = 0,
    defect_rate: float = 0.1,
    size: int = 128,
) -> Iterator[Frame]:
    """Endless synthetic parts; ``meta["defect"]`` carries the ground truth."""
    for part in part_stream(categories, seed, defect_rate, size):
        yield Frame(
            line=line,
            station=station,
            category=part.category,
            rgb=part.rgb,
            xyz=part.xyz,
            meta={"defect": part.defect, "source": "synthetic"},
        )


def dataset_frames(
    root: Path, line: str, station: str, split: str = "test", categories: list[str] | None = None
) -> Iterator[Frame]:
    """Every sample of ``split`` in an MVTec 3D-AD or Eyecandies folder, category by category."""
    for cat in categories or categories_in(root):
        for s in iter_dataset(root, cat, split):
            yield Frame(line=line, station=station, category=cat, rgb=s.rgb, xyz=s.xyz, meta=dict(s.meta))


def paced(frames: Iterator[Frame], fps: float, count: int | None) -> Iterator[Frame]:
    """At most ``count`` frames at ``fps`` (0 = as fast as possible), on a fixed schedule."""
    start = time.perf_counter()
    for i, frame in enumerate(itertools.islice(frames, count)):
        if fps > 0:
            delay = start + i / fps - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        frame.captured_ns = time.time_ns()
        yield frame
