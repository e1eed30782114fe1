"""Malformed and hostile frames, for drills and tests: what a broken sensor or an attacker sends.

Every payload here must end in the dead-letter topic with a reason, never crash a worker,
and never make it allocate more than ``max_frame_bytes``. An all-zero point cloud is *not*
here: it is a valid frame from a sensor whose 3D camera failed, scored by the RGB branch
and flagged ``degraded`` (or dead-lettered by a 3D-only model).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import msgpack
import numpy as np

from duoscan.schemas import Frame, encode_array


@lru_cache(maxsize=1)
def _bomb() -> dict:
    """75 MB of zeros that zstd packs into a few kB: the decoder must refuse it by its claimed size."""
    return encode_array(np.zeros((5000, 5000, 3), np.uint8), "zstd")


def _edit(frame: Frame, fn: Callable[[dict], None], codec: str = "none") -> bytes:
    obj = msgpack.unpackb(frame.encode(codec=codec), raw=False)  # type: ignore[arg-type]
    fn(obj)
    return msgpack.packb(obj, use_bin_type=True)


def _with_xyz(frame: Frame, value: float) -> Callable[[dict], None]:
    xyz = frame.xyz.copy()
    xyz[0, 0, 2] = value
    return lambda o: o.update(xyz=encode_array(xyz, "none"))


HOSTILE_KINDS: dict[str, Callable[[Frame, np.random.Generator], bytes]] = {
    "random bytes": lambda f, rng: rng.integers(0, 256, int(rng.integers(1, 4096)), dtype=np.uint8).tobytes(),
    "empty": lambda f, rng: b"",
    "truncated msgpack": lambda f, rng: (p := f.encode())[: int(rng.integers(1, len(p) - 1))],
    "wrong schema version": lambda f, rng: _edit(f, lambda o: o.update(v=99)),
    "wrong dtype": lambda f, rng: _edit(f, lambda o: o["rgb"].update(dtype="float64")),
    "object dtype": lambda f, rng: _edit(f, lambda o: o["xyz"].update(dtype="object")),
    "mismatched rgb/xyz shapes": lambda f, rng: _edit(
        f, lambda o: o.update(xyz=encode_array(np.ones((3, 3, 3), np.float32), "none"))
    ),
    "absurd dimensions": lambda f, rng: _edit(f, lambda o: o["rgb"].update(shape=[10**6, 10**6, 3])),
    "byte-count lie": lambda f, rng: _edit(f, lambda o: o["xyz"].update(data=o["xyz"]["data"][:-4])),
    "NaN in xyz": lambda f, rng: _edit(f, _with_xyz(f, float("nan"))),
    "Inf in xyz": lambda f, rng: _edit(f, _with_xyz(f, float("inf"))),
    "decompression bomb": lambda f, rng: _edit(f, lambda o: o.update(rgb=_bomb(), xyz={**_bomb(), "dtype": "float32"})),
    "not a map": lambda f, rng: msgpack.packb([1, 2, 3]),
    "ext type": lambda f, rng: msgpack.packb(msgpack.ExtType(7, b"\x80\x04payload")),
}


def hostile_payloads(template: Frame, n: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """``n`` hostile payloads cycling through every kind, built from a valid ``template`` frame."""
    rng = np.random.default_rng(seed)
    kinds = sorted(HOSTILE_KINDS)
    return [(kinds[i % len(kinds)], HOSTILE_KINDS[kinds[i % len(kinds)]](template, rng)) for i in range(n)]
