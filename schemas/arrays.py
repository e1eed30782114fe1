"""Explicit, bounded encoding of numpy arrays inside msgpack maps.

An array travels as ``{"dtype": str, "shape": [..], "codec": str, "data": bytes}`` with codec
``none``, ``zstd``, ``lz4``, or ``zstd-delta`` / ``lz4-delta``: lossless, channel-planar, each row
delta-coded on the integer bit patterns (wrapping) and byte-shuffled before compression, which
halves organized point clouds (neighbouring points differ in their low bytes only). The filter
is part of the codec name so a decoder that does not know it refuses the frame instead of
misreading it.
Nothing here executes data: no pickle, no msgpack ext types. Decoding checks the
dtype against a whitelist and the claimed size against the caller's budget
*before* decompressing, so a decompression bomb or a lying header costs nothing.
"""

from __future__ import annotations

from typing import Any, Literal

import lz4.block
import numpy as np
import zstandard

from ._msgpack import require
from .errors import SchemaError

Codec = Literal["none", "zstd", "lz4", "zstd-delta", "lz4-delta"]
CODECS: tuple[str, ...] = ("none", "zstd", "lz4", "zstd-delta", "lz4-delta")
_UINT = {1: np.dtype("<u1"), 2: np.dtype("<u2"), 4: np.dtype("<u4")}
# Little-endian only: the wire format is fixed, whatever the host.
ALLOWED_DTYPES: dict[str, np.dtype] = {
    "uint8": np.dtype("<u1"),
    "uint16": np.dtype("<u2"),
    "float16": np.dtype("<f2"),
    "float32": np.dtype("<f4"),
}
_ZSTD_LEVEL = 1  # level 1 keeps encode cheap on the producer; higher levels buy little on noisy XYZ.


def encode_array(arr: np.ndarray, codec: Codec = "zstd") -> dict[str, Any]:
    """Encode ``arr`` (a whitelisted dtype) as a msgpack-ready map."""
    name = arr.dtype.name
    if name not in ALLOWED_DTYPES:
        raise SchemaError(f"dtype {name} is not allowed on the wire (allowed: {', '.join(ALLOWED_DTYPES)})")
    if codec not in CODECS:
        raise SchemaError(f"unknown codec {codec!r} (known: {', '.join(CODECS)})")
    shape = list(arr.shape)
    arr = np.ascontiguousarray(arr, dtype=ALLOWED_DTYPES[name]).reshape(shape)
    raw = _delta_filter(arr) if codec.endswith("-delta") else arr.tobytes()
    if codec.startswith("zstd"):
        data = zstandard.ZstdCompressor(level=_ZSTD_LEVEL, write_content_size=True).compress(raw)
    elif codec.startswith("lz4"):
        data = lz4.block.compress(raw, store_size=False)
    else:
        data = raw
    return {"dtype": name, "shape": shape, "codec": codec, "data": data}


def decode_array(obj: Any, field: str, *, max_bytes: int, ndim: int | None = None) -> np.ndarray:
    """Decode and validate one array map; raise :class:`SchemaError` on any lie."""
    if not isinstance(obj, dict):
        raise SchemaError(f"{field}: expected an array map, got {type(obj).__name__}")
    missing = {"dtype", "shape", "codec", "data"} - obj.keys()
    if missing:
        raise SchemaError(f"{field}: array map lacks {', '.join(sorted(missing))}")
    # typed first: one flipped msgpack byte can turn a name into a list, which a membership test would hash
    dtype_name, codec = require(obj, "dtype", str, field), require(obj, "codec", str, field)
    shape, data = obj["shape"], obj["data"]
    if dtype_name not in ALLOWED_DTYPES:
        raise SchemaError(f"{field}: dtype {dtype_name!r} is not allowed (allowed: {', '.join(ALLOWED_DTYPES)})")
    if codec not in CODECS:
        raise SchemaError(f"{field}: unknown codec {codec!r}")
    if not isinstance(data, bytes):
        raise SchemaError(f"{field}: data must be bytes, got {type(data).__name__}")
    if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in shape):
        raise SchemaError(f"{field}: shape must be a list of integers")
    if ndim is not None and len(shape) != ndim:
        raise SchemaError(f"{field}: expected {ndim} dimensions, got {len(shape)}")
    if any(s < 0 for s in shape):
        raise SchemaError(f"{field}: negative dimension in shape {shape}")
    dtype = ALLOWED_DTYPES[dtype_name]
    nbytes = dtype.itemsize
    for s in shape:  # incremental product: never overflows into a "small" number
        nbytes *= s
        if nbytes > max_bytes:
            raise SchemaError(f"{field}: shape {shape} of {dtype_name} exceeds the frame budget of {max_bytes} bytes")
    raw = _decompress(data, codec, nbytes, field)
    if len(raw) != nbytes:
        raise SchemaError(f"{field}: {len(raw)} bytes of data for shape {shape} of {dtype_name} (expected {nbytes})")
    if codec.endswith("-delta"):
        return _delta_unfilter(raw, dtype, shape)
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _planar(shape: list[int] | tuple[int, ...]) -> tuple[int, ...]:
    """H×W×C travels as C×H×W (rows of one channel are smooth); other shapes as they are."""
    if len(shape) == 3:
        return (shape[2], shape[0], shape[1])
    return tuple(shape) if shape else (1,)


def _delta_filter(arr: np.ndarray) -> bytes:
    a = arr.transpose(2, 0, 1) if arr.ndim == 3 else arr.reshape(_planar(arr.shape))
    u = np.ascontiguousarray(a).view(_UINT[arr.dtype.itemsize])
    d = u.copy()
    d[..., 1:] -= u[..., :-1]  # unsigned: wraps, so it is exactly invertible
    return np.ascontiguousarray(d.view(np.uint8).reshape(-1, arr.dtype.itemsize).T).tobytes()


def _delta_unfilter(raw: bytes, dtype: np.dtype, shape: list[int]) -> np.ndarray:
    size = dtype.itemsize
    planes = np.frombuffer(raw, np.uint8).reshape(size, -1)
    if size == 1:
        u = planes.reshape(_planar(shape))
    else:
        interleaved = np.empty((planes.shape[1], size), np.uint8)
        for k in range(size):  # one strided store per byte plane: 4x faster than copying planes.T
            interleaved[:, k] = planes[k]
        u = interleaved.view(_UINT[size]).reshape(_planar(shape))
    if len(shape) == 3:  # the running sum writes straight into H×W×C: no separate transpose copy
        out = np.empty(shape, _UINT[size])
        np.cumsum(u, axis=-1, dtype=out.dtype, out=out.transpose(2, 0, 1))
        return out.view(dtype)
    return np.cumsum(u, axis=-1, dtype=u.dtype).view(dtype).reshape(shape)


def _decompress(data: bytes, codec: str, nbytes: int, field: str) -> bytes:
    if codec == "none":
        return data
    try:
        if codec.startswith("zstd"):
            claimed = zstandard.get_frame_parameters(data).content_size
            if claimed != nbytes:
                raise SchemaError(f"{field}: zstd frame claims {claimed} bytes, shape needs {nbytes}")
            return zstandard.ZstdDecompressor().decompress(data, max_output_size=nbytes)
        return lz4.block.decompress(data, uncompressed_size=nbytes)
    except SchemaError:
        raise
    except Exception as exc:  # zstd/lz4 raise their own types on corrupt input
        raise SchemaError(f"{field}: corrupt {codec} payload ({exc})") from None
