"""A small thread pool for the per-frame work that is not batched tensor code: open3d's FPFH, SciPy's hole
filling and silhouettes (the rest of preprocessing runs as batched tensor operations, see ``preprocess``).

NumPy, SciPy and open3d release the GIL in their kernels, so a batch's frames can be processed
on every core while the backbone and networks, which already use all cores, wait their turn.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

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
        _pool, _size = named_pool("frames", threads), threads
    return list(_pool.map(fn, items))


def name_os_thread(name: str) -> None:
    """Name the calling thread for the OS, not only for Python (Linux: ``top -H``, py-spy,
    ``/proc/<pid>/task/<tid>/comm``; 15 characters at most), so CPU time can be told apart per
    stage. Threads it starts later (OpenMP, onnxruntime) inherit the name. No-op elsewhere."""
    try:
        ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)  # 15 = PR_SET_NAME
    except (OSError, AttributeError):
        pass


def named_pool(name: str, workers: int = 1) -> ThreadPoolExecutor:
    """A thread pool whose threads carry ``name`` for Python and for the OS (see :func:`name_os_thread`)."""
    return ThreadPoolExecutor(
        max_workers=workers, thread_name_prefix=name, initializer=name_os_thread, initargs=(name,)
    )


@contextmanager
def os_thread_named(name: str) -> Iterator[None]:
    """The calling thread carries ``name`` inside the block (so native threads started there inherit it), then its
    old name."""
    old = ctypes.create_string_buffer(16)
    try:
        ctypes.CDLL(None).prctl(16, old, 0, 0, 0)  # 16 = PR_GET_NAME
    except (OSError, AttributeError):
        yield
        return
    name_os_thread(name)
    try:
        yield
    finally:
        name_os_thread(old.value.decode(errors="replace"))
