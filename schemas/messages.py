"""Result, Alert and DeadLetter: what workers emit."""

from __future__ import annotations

import json
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, ClassVar

from ._msgpack import check_version, pack, require, unpack
from .errors import SchemaError

MESSAGE_SCHEMA_VERSION = 1
_MAX_MESSAGE_BYTES = 1 << 20


@dataclass(frozen=True)
class Timings:
    """Wall-clock nanoseconds at each hop; ``published`` comes from the producer's clock."""

    captured_ns: int
    published_ns: int
    consumed_ns: int
    scored_ns: int
    written_ns: int = 0

    @property
    def publish_to_write_ms(self) -> float:
        return (self.written_ns - self.published_ns) / 1e6


@dataclass(frozen=True)
class Region:
    """The largest connected anomalous region of a heatmap, in heatmap pixels."""

    area_px: int
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 (inclusive)


class _Message:
    kind: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)  # type: ignore[call-overload]
        d.update(v=MESSAGE_SCHEMA_VERSION, kind=self.kind)
        return d

    def encode(self) -> bytes:
        return pack(self.to_dict())

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def decode(cls, payload: bytes) -> Any:
        obj = unpack(payload, max_bytes=_MAX_MESSAGE_BYTES, kind=cls.kind)
        check_version(obj, MESSAGE_SCHEMA_VERSION, cls.kind)
        return cls._from_obj(obj)

    @classmethod
    def _from_obj(cls, obj: dict[str, Any]) -> Any:
        kwargs: dict[str, Any] = {}
        for f in fields(cls):  # type: ignore[arg-type]
            if f.name not in obj and f.default is not MISSING:
                continue  # optional fields added within a schema version: older senders omit them
            kwargs[f.name] = _field(obj, f.name, str(f.type), cls.kind)
        return cls(**kwargs)


def _field(obj: dict[str, Any], name: str, type_name: str, kind: str) -> Any:
    if type_name == "str":
        return require(obj, name, str, kind)
    if type_name == "int":
        return require(obj, name, int, kind)
    if type_name == "float":
        return float(require(obj, name, (int, float), kind))
    if type_name == "bool":
        return require(obj, name, bool, kind)
    if type_name == "bytes":
        return require(obj, name, bytes, kind)
    if type_name == "list[str]":
        value = require(obj, name, list, kind)
        if not all(isinstance(x, str) for x in value):
            raise SchemaError(f"{kind}: {name} must be a list of strings")
        return value
    if type_name == "Timings":
        t = require(obj, name, dict, kind)
        return Timings(**{f.name: require(t, f.name, int, kind) for f in fields(Timings)})
    if type_name == "Region | None":
        r = obj.get(name)
        if r is None:
            return None
        if not isinstance(r, dict):
            raise SchemaError(f"{kind}: {name} must be a map or nil")
        bbox = require(r, "bbox", list, kind)
        if len(bbox) != 4 or not all(isinstance(x, int) for x in bbox):
            raise SchemaError(f"{kind}: {name}.bbox must be four integers")
        return Region(area_px=require(r, "area_px", int, kind), bbox=tuple(bbox))  # type: ignore[arg-type]
    raise TypeError(f"no decoder for field type {type_name}")  # programming error, not bad input


@dataclass(frozen=True)
class Result(_Message):
    """The verdict on one frame, as stored in Redis (keyed by ``frame_id``)."""

    kind: ClassVar[str] = "result"
    frame_id: str
    line: str
    station: str
    category: str
    model: str
    model_version: str
    score: float
    threshold: float
    verdict: str  # "ok" | "anomalous"
    heatmap_key: str
    modalities: list[str]  # which inputs scored the frame, e.g. ["rgb", "xyz"]
    region: Region | None
    timings: Timings
    degraded: bool = False  # scored without an input the model was trained on (e.g. no usable depth)

    @property
    def anomalous(self) -> bool:
        return self.verdict == "anomalous"


@dataclass(frozen=True)
class Alert(_Message):
    """What an MES needs to act on an anomalous part."""

    kind: ClassVar[str] = "alert"
    frame_id: str
    line: str
    station: str
    category: str
    score: float
    threshold: float
    heatmap_key: str
    region: Region | None
    model: str
    model_version: str
    time_ns: int = field(default_factory=time.time_ns)
    degraded: bool = False

    @classmethod
    def from_result(cls, r: Result) -> Alert:
        return cls(
            frame_id=r.frame_id,
            line=r.line,
            station=r.station,
            category=r.category,
            score=r.score,
            threshold=r.threshold,
            heatmap_key=r.heatmap_key,
            region=r.region,
            model=r.model,
            model_version=r.model_version,
            degraded=r.degraded,
        )


@dataclass(frozen=True)
class DeadLetter(_Message):
    """A message a worker could not process: the original bytes and why."""

    kind: ClassVar[str] = "dead_letter"
    reason: str
    source_topic: str
    source_partition: int
    source_offset: int
    frame_id: str  # "" when the frame id could not be read
    payload: bytes
    time_ns: int = field(default_factory=time.time_ns)

    @classmethod
    def decode(cls, payload: bytes) -> DeadLetter:
        obj = unpack(payload, max_bytes=1 << 31, kind=cls.kind)
        check_version(obj, MESSAGE_SCHEMA_VERSION, cls.kind)
        return cls._from_obj(obj)
