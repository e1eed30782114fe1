"""Frame: one RGB image plus its aligned, organized point cloud."""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field
import numpy as np

from ._msgpack import check_version, pack, require, unpack
from .arrays import Codec, decode_array, encode_array
from .errors import SchemaError
from .limits import DecodeLimits

FRAME_SCHEMA_VERSION = 1
_ID = re.compile(r"^[A-Za-z0-9._:/@-]{1,256}$")
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def new_frame_id() -> str:
    return uuid.uuid4().hex


@dataclass
class Frame:
    """One inspection frame as it travels from a producer to a worker.

    ``xyz`` is H×W×3 in metres, organized like the image; a point that is all
    zeros means "no measurement" (MVTec 3D-AD's convention). ``published_ns``
    is stamped by the producer when it hands the frame to Kafka.
    """

    line: str
    station: str
    category: str
    rgb: np.ndarray
    xyz: np.ndarray
    frame_id: str = field(default_factory=new_frame_id)
    captured_ns: int = field(default_factory=time.time_ns)
    published_ns: int = 0
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> bytes:
        """Kafka key: one station's frames land on one partition, in order."""
        return self.key_for(self.line, self.station)

    @staticmethod
    def key_for(line: str, station: str) -> bytes:
        return f"{line}/{station}".encode()

    def validate(self, limits: DecodeLimits | None = None) -> "Frame":
        limits = limits or DecodeLimits()
        for name in ("line", "station", "category"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _NAME.match(value):
                raise SchemaError(f"frame: {name} {value!r} must be 1-64 characters of [A-Za-z0-9._-]")
        if not isinstance(self.frame_id, str) or not _ID.match(self.frame_id):
            raise SchemaError(f"frame: frame_id {self.frame_id!r} must be 1-256 characters of [A-Za-z0-9._:/@-]")
        if self.rgb.ndim != 3 or self.rgb.shape[2] != 3 or self.rgb.dtype != np.uint8:
            raise SchemaError(f"frame: rgb must be H×W×3 uint8, got {self.rgb.shape} {self.rgb.dtype}")
        if self.xyz.ndim != 3 or self.xyz.shape[2] != 3 or self.xyz.dtype not in (np.float32, np.float16):
            raise SchemaError(f"frame: xyz must be H×W×3 float32/float16, got {self.xyz.shape} {self.xyz.dtype}")
        if self.rgb.shape[:2] != self.xyz.shape[:2]:
            raise SchemaError(f"frame: rgb is {self.rgb.shape[:2]} but xyz is {self.xyz.shape[:2]}; they must be aligned")
        h, w = self.rgb.shape[:2]
        if not (1 <= h <= limits.max_side and 1 <= w <= limits.max_side):
            raise SchemaError(f"frame: image side outside 1..{limits.max_side}: {h}×{w}")
        if not np.isfinite(self.xyz).all():
            raise SchemaError("frame: xyz contains NaN or Inf (use all-zero points for missing measurements)")
        if len(self.meta) > limits.max_meta_items:
            raise SchemaError(f"frame: more than {limits.max_meta_items} metadata items")
        for k, v in self.meta.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise SchemaError("frame: metadata must map strings to strings")
            if len(k) > 256 or len(v) > limits.max_text_len:
                raise SchemaError(f"frame: metadata item {k[:40]!r} is too long")
        return self

    def encode(self, codec: Codec = "zstd", xyz_float16: bool = False) -> bytes:
        """msgpack bytes. ``xyz_float16`` halves XYZ (about 0.1 mm error at 0.5 m; see README)."""
        self.validate()
        xyz = self.xyz.astype(np.float16 if xyz_float16 else np.float32, copy=False)
        return pack(
            {
                "v": FRAME_SCHEMA_VERSION,
                "kind": "frame",
                "frame_id": self.frame_id,
                "line": self.line,
                "station": self.station,
                "category": self.category,
                "captured_ns": int(self.captured_ns),
                "published_ns": int(self.published_ns),
                "meta": dict(self.meta),
                "rgb": encode_array(self.rgb, codec),
                "xyz": encode_array(xyz, codec),
            }
        )

    @classmethod
    def decode(cls, payload: bytes, limits: DecodeLimits | None = None) -> "Frame":
        """Decode and fully validate; raise :class:`SchemaError` with the reason otherwise."""
        limits = limits or DecodeLimits()
        obj = unpack(payload, max_bytes=limits.max_frame_bytes, kind="frame")
        check_version(obj, FRAME_SCHEMA_VERSION, "frame")
        meta = require(obj, "meta", dict, "frame")
        budget = limits.max_frame_bytes
        rgb = decode_array(require(obj, "rgb", dict, "frame"), "rgb", max_bytes=budget, ndim=3)
        xyz = decode_array(require(obj, "xyz", dict, "frame"), "xyz", max_bytes=budget - rgb.nbytes, ndim=3)
        if xyz.dtype == np.float16:
            xyz = xyz.astype(np.float32)
        frame = cls(
            line=require(obj, "line", str, "frame"),
            station=require(obj, "station", str, "frame"),
            category=require(obj, "category", str, "frame"),
            rgb=rgb,
            xyz=xyz,
            frame_id=require(obj, "frame_id", str, "frame"),
            captured_ns=require(obj, "captured_ns", int, "frame"),
            published_ns=require(obj, "published_ns", int, "frame"),
            meta=meta,
        )
        return frame.validate(limits)


def peek_frame_id(payload: bytes) -> str | None:
    """Best-effort frame id of a message that failed to decode (for the DLQ record)."""
    try:
        obj = unpack(payload, max_bytes=len(payload) + 1, kind="frame")
        fid = obj.get("frame_id")
        return fid if isinstance(fid, str) and _ID.match(fid) else None
    except SchemaError:
        return None

