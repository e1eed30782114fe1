"""Explicit, bounded encoding of numpy arrays inside msgpack maps.

An array travels as ``{"dtype": str, "shape": [..], "codec": "none"|"zstd"|"lz4", "data": bytes}``.
Nothing here executes data: no pickle, no msgpack ext types. Decoding checks the
dtype against a whitelist and the claimed size against the caller's budget
*before* decompressing, so a decompression bomb or a lying header costs nothing.
"""

from __future__ import annotations

from typing import Any, Literal

import lz4.block
import numpy as np
import zstandard

from .errors import SchemaError

Codec = Literal["none", "zstd", "lz4"]
CODECS: tuple[str, ...] = ("none", "zstd", "lz4")
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
    raw = np.ascontiguousarray(arr, dtype=ALLOWED_DTYPES[name]).tobytes()
    if codec == "zstd":
        data = zstandard.ZstdCompressor(level=_ZSTD_LEVEL, write_content_size=True).compress(raw)
    elif codec == "lz4":
        data = lz4.block.compress(raw, store_size=False)
    else:
        data = raw
    return {"dtype": name, "shape": list(arr.shape), "codec": codec, "data": data}


def decode_array(obj: Any, field: str, *, max_bytes: int, ndim: int | None = None) -> np.ndarray:
    """Decode and validate one array map; raise :class:`SchemaError` on any lie."""
    if not isinstance(obj, dict):
        raise SchemaError(f"{field}: expected an array map, got {type(obj).__name__}")
    missing = {"dtype", "shape", "codec", "data"} - obj.keys()
    if missing:
        raise SchemaError(f"{field}: array map lacks {', '.join(sorted(missing))}")
    dtype_name, shape, codec, data = obj["dtype"], obj["shape"], obj["codec"], obj["data"]
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
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _decompress(data: bytes, codec: str, nbytes: int, field: str) -> bytes:
    if codec == "none":
        return data
    try:
        if codec == "zstd":
            claimed = zstandard.get_frame_parameters(data).content_size
            if claimed != nbytes:
                raise SchemaError(f"{field}: zstd frame claims {claimed} bytes, shape needs {nbytes}")
            return zstandard.ZstdDecompressor().decompress(data, max_output_size=nbytes)
        return lz4.block.decompress(data, uncompressed_size=nbytes)
    except SchemaError:
        raise
    except Exception as exc:  # zstd/lz4 raise their own types on corrupt input
        raise SchemaError(f"{field}: corrupt {codec} payload ({exc})") from None
