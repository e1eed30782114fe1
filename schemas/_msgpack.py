"""Safe msgpack entry points shared by every message type."""

from __future__ import annotations

from typing import Any

import msgpack

from .errors import SchemaError


def _no_ext(code: int, data: bytes) -> Any:
    raise SchemaError(f"msgpack extension type {code} is not allowed")


def pack(obj: dict[str, Any]) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(payload: bytes, *, max_bytes: int, kind: str) -> dict[str, Any]:
    """Unpack one top-level map with every msgpack size limit pinned to ``max_bytes``."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise SchemaError(f"{kind}: payload must be bytes, got {type(payload).__name__}")
    if len(payload) > max_bytes:
        raise SchemaError(f"{kind}: message of {len(payload)} bytes exceeds the limit of {max_bytes}")
    try:
        obj = msgpack.unpackb(
            payload,
            raw=False,
            strict_map_key=True,
            ext_hook=_no_ext,
            max_bin_len=max_bytes,
            max_str_len=1 << 20,
            max_array_len=1 << 16,
            max_map_len=1 << 12,
        )
    except SchemaError:
        raise
    except Exception as exc:  # msgpack raises a zoo of types on garbage
        raise SchemaError(f"{kind}: not a valid msgpack message ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise SchemaError(f"{kind}: top level must be a map, got {type(obj).__name__}")
    return obj


def require(obj: dict[str, Any], key: str, typ: type | tuple[type, ...], kind: str, max_len: int = 4096) -> Any:
    """Fetch ``obj[key]`` and check its type (bools are never ints here) and string length."""
    if key not in obj:
        raise SchemaError(f"{kind}: missing field {key!r}")
    value = obj[key]
    types = typ if isinstance(typ, tuple) else (typ,)
    if isinstance(value, bool) and bool not in types or not isinstance(value, types):
        raise SchemaError(
            f"{kind}: field {key!r} must be {'/'.join(t.__name__ for t in types)}, got {type(value).__name__}"
        )
    if isinstance(value, str) and len(value) > max_len:
        raise SchemaError(f"{kind}: field {key!r} is longer than {max_len} characters")
    return value


def check_version(obj: dict[str, Any], supported: int | tuple[int, ...], kind: str) -> int:
    """The message's schema version, if this build reads it."""
    versions = supported if isinstance(supported, tuple) else (supported,)
    version = require(obj, "v", int, kind)
    if version not in versions:
        raise SchemaError(
            f"{kind}: unknown schema version {version} (this build reads version {'/'.join(map(str, versions))})"
        )
    if obj.get("kind") != kind:
        raise SchemaError(f"{kind}: message kind is {obj.get('kind')!r}, expected {kind!r}")
    return version
