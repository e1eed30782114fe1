"""Frame: one RGB image and/or its aligned, organized point cloud.

Schema version 2 lets a frame carry only one of them (a colour-only or a 3D-only station); version 1
frames (always both) still decode.
"""

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

FRAME_SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
MODALITIES = ("rgb", "xyz")
_ID = re.compile(r"^[A-Za-z0-9._:/@-]{1,256}$")
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def is_name(value: object) -> bool:
    """A valid line, station or category id: it names topics and Kafka keys."""
    return isinstance(value, str) and bool(_NAME.match(value))


def new_frame_id() -> str:
    return uuid.uuid4().hex


@dataclass
class Frame:
    """One inspection frame as it travels from a producer to a worker.

    ``xyz`` is H×W×3 in metres, organized like the image; a point that is all
    zeros means "no measurement" (MVTec 3D-AD's convention). Either may be None
    (a 2D-only or 3D-only station), not both. ``published_ns`` is stamped by the
    producer when it hands the frame to Kafka.
    """

    line: str
    station: str
    category: str
    rgb: np.ndarray | None
    xyz: np.ndarray | None
    frame_id: str = field(default_factory=new_frame_id)
    captured_ns: int = field(default_factory=time.time_ns)
    published_ns: int = 0
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def modalities(self) -> tuple[str, ...]:
        """The inputs this frame carries: ("rgb", "xyz"), ("rgb",) or ("xyz",)."""
        return tuple(m for m in MODALITIES if getattr(self, m) is not None)

    @property
    def shape(self) -> tuple[int, int]:
        """H, W of whichever array the frame carries."""
        return (self.rgb if self.rgb is not None else self.xyz).shape[:2]  # type: ignore[union-attr]

    @property
    def key(self) -> bytes:
        """Kafka key: one station's frames land on one partition, in order."""
        return self.key_for(self.line, self.station)

    @staticmethod
    def key_for(line: str, station: str) -> bytes:
        return f"{line}/{station}".encode()

    def validate(self, limits: DecodeLimits | None = None) -> Frame:
        """Raise :class:`SchemaError` with the reason unless the frame satisfies the wire contract."""
        limits = limits or DecodeLimits()
        self._validate_names()
        self._validate_arrays(limits)
        self._validate_meta(limits)
        return self

    def _validate_names(self) -> None:
        for name in ("line", "station", "category"):
            value = getattr(self, name)
            if not is_name(value):
                raise SchemaError(f"frame: {name} {value!r} must be 1-64 characters of [A-Za-z0-9._-]")
        if not isinstance(self.frame_id, str) or not _ID.match(self.frame_id):
            raise SchemaError(f"frame: frame_id {self.frame_id!r} must be 1-256 characters of [A-Za-z0-9._:/@-]")

    def _validate_arrays(self, limits: DecodeLimits) -> None:
        for name in MODALITIES:
            value = getattr(self, name)
            if value is not None and not isinstance(value, np.ndarray):
                raise SchemaError(
                    f"frame: {name} must be a numpy array (or None when the station has no such sensor), got "
                    f"{type(value).__name__}"
                )
        if self.rgb is None and self.xyz is None:
            raise SchemaError("frame: carries neither rgb nor xyz; a frame needs at least one of them")
        if self.rgb is not None and (self.rgb.ndim != 3 or self.rgb.shape[2] != 3 or self.rgb.dtype != np.uint8):
            raise SchemaError(f"frame: rgb must be H×W×3 uint8, got {self.rgb.shape} {self.rgb.dtype}")
        if self.xyz is not None and (
            self.xyz.ndim != 3 or self.xyz.shape[2] != 3 or self.xyz.dtype not in (np.float32, np.float16)
        ):
            raise SchemaError(f"frame: xyz must be H×W×3 float32/float16, got {self.xyz.shape} {self.xyz.dtype}")
        if self.rgb is not None and self.xyz is not None and self.rgb.shape[:2] != self.xyz.shape[:2]:
            raise SchemaError(
                f"frame: rgb is {self.rgb.shape[:2]} but xyz is {self.xyz.shape[:2]}; they must be aligned"
            )
        h, w = self.shape
        if not (1 <= h <= limits.max_side and 1 <= w <= limits.max_side):
            raise SchemaError(f"frame: image side outside 1..{limits.max_side}: {h}×{w}")
        if self.xyz is not None and not np.isfinite(self.xyz).all():
            raise SchemaError("frame: xyz contains NaN or Inf (use all-zero points for missing measurements)")

    def _validate_meta(self, limits: DecodeLimits) -> None:
        if len(self.meta) > limits.max_meta_items:
            raise SchemaError(f"frame: more than {limits.max_meta_items} metadata items")
        for k, v in self.meta.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise SchemaError("frame: metadata must map strings to strings")
            if len(k) > 256 or len(v) > limits.max_text_len:
                raise SchemaError(f"frame: metadata item {k[:40]!r} is too long")

    def encode(self, codec: Codec = "zstd", xyz_float16: bool = False, limits: DecodeLimits | None = None) -> bytes:
        """msgpack bytes. ``xyz_float16`` halves XYZ (about 0.1 mm error at 0.5 m; see README).

        ``limits`` are the workers' decode limits: a frame whose arrays would exceed their decode budget is
        refused here, at the producer, rather than compressing under the message limit and being
        dead-lettered by every worker."""
        limits = limits or DecodeLimits()
        self.validate(limits)
        xyz = None if self.xyz is None else self.xyz.astype(np.float16 if xyz_float16 else np.float32, copy=False)
        decoded = sum(a.nbytes for a in (self.rgb, xyz) if a is not None)
        if decoded > limits.max_frame_bytes:
            raise SchemaError(
                f"frame: its arrays take {decoded:,} bytes decoded, over the {limits.max_frame_bytes:,}-byte "
                "decode budget "
                "every worker enforces (DUOSCAN_MAX_FRAME_BYTES); send smaller frames, DUOSCAN_XYZ_FLOAT16=1, or "
                "raise the limit"
            )
        arrays = {name: encode_array(a, codec) for name, a in (("rgb", self.rgb), ("xyz", xyz)) if a is not None}
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
                **arrays,
            }
        )

    @classmethod
    def decode(cls, payload: bytes, limits: DecodeLimits | None = None) -> Frame:
        """Decode and fully validate; raise :class:`SchemaError` with the reason otherwise."""
        limits = limits or DecodeLimits()
        obj = unpack(payload, max_bytes=limits.max_frame_bytes, kind="frame")
        version = check_version(obj, READABLE_VERSIONS, "frame")
        meta = require(obj, "meta", dict, "frame")
        budget = limits.max_frame_bytes
        rgb = xyz = None
        if version == 1 or "rgb" in obj:  # version 1 always carries both
            rgb = decode_array(require(obj, "rgb", dict, "frame"), "rgb", max_bytes=budget, ndim=3)
            budget -= rgb.nbytes
        if version == 1 or "xyz" in obj:
            xyz = decode_array(require(obj, "xyz", dict, "frame"), "xyz", max_bytes=budget, ndim=3)
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
