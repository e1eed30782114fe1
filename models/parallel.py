"""A small thread pool for per-frame NumPy work (preprocessing, point features).

NumPy, SciPy and open3d release the GIL in their kernels, so a batch's frames can be prepared
on every core while the backbone and networks, which already use all cores, wait their turn.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")
_pool: ThreadPoolExecutor | None = None
_size = 0


def map_frames(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``[fn(x) for x in items]`` in order, across ``torch.get_num_threads()`` threads."""
    global _pool, _size
    items = list(items)
    threads = torch.get_num_threads()
    if len(items) < 2 or threads < 2:
        return [fn(x) for x in items]
    if _pool is None or _size != threads:
        if _pool is not None:
            _pool.shutdown(wait=False)
        _pool, _size = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="frames"), threads
    return list(_pool.map(fn, items))
