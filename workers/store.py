"""Results in Redis: one hash per frame, its heatmap and preview, per-line and anomaly streams, alert dedupe marks.

Every write is keyed by frame id, so a redelivered frame overwrites its earlier
result instead of duplicating it (the per-line stream gets one entry per frame).
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import redis
from PIL import Image

from duoscan.core.config import Settings
from duoscan.core.redis_client import connect
from duoscan.schemas import Region, Result, Timings, decode_array, encode_array

_LUA = (Path(__file__).parent / "write_result.lua").read_text()


def encode_preview(rgb: np.ndarray | None, xyz: np.ndarray | None, max_side: int) -> bytes:
    """What the operator view shows of a frame, at most ``max_side`` px: RGB as JPEG, depth (Z) as float16.

    Kept cheap for the worker (about a millisecond at 224 px); the view renders the depth image on request.
    A 3D-only frame's "RGB" is its rendered depth, so overlays still have a picture under them; a colour-only
    frame has no Z.
    """
    from duoscan.core.overlay import render_depth

    h, w = (rgb if rgb is not None else xyz).shape[:2]  # type: ignore[union-attr]
    step = max(1, -(-max(h, w) // max_side))  # integer stride: no resampling of the cloud
    z = None if xyz is None else xyz[::step, ::step, 2]
    small = rgb[::step, ::step] if rgb is not None else render_depth(z)  # type: ignore[arg-type]
    buf = io.BytesIO()
    Image.fromarray(small).save(buf, "JPEG", quality=85)
    preview: dict[str, Any] = {"rgb": buf.getvalue()}
    if z is not None:
        preview["z"] = encode_array(to_float16(z), "zstd")
    return msgpack.packb(preview, use_bin_type=True)


def decode_preview(blob: bytes) -> tuple[bytes, np.ndarray | None]:
    """(RGB as the stored JPEG bytes, Z float32 or None) of a stored preview."""
    d = msgpack.unpackb(blob, raw=False)
    return d["rgb"], (
        decode_array(d["z"], "preview z", max_bytes=64 * 1024 * 1024, ndim=2).astype(np.float32) if "z" in d else None
    )


def encode_heatmap(pixel_map: np.ndarray) -> bytes:
    """float16 + zstd: ~4x smaller than float32 and plenty for a display/threshold map."""
    return msgpack.packb(encode_array(to_float16(pixel_map), "zstd"), use_bin_type=True)


_F16_CHUNK = 16384  # elements: under torch's parallel grain (32768), so each copy runs on the calling thread


def to_float16(a: np.ndarray) -> np.ndarray:
    """``a.astype(np.float16)``, bit for bit, about 5x faster.

    NumPy has no vectorised float16 cast (0.35 ms per 224x224 map here, ~1 ms of the deliver thread's time
    per frame under load); torch's is. A whole-array torch cast would run on an OpenMP team opened by the
    calling thread, whose threads spin after each call (3.2 ms of CPU per map, measured), so it is done in
    chunks small enough for torch to stay on this thread.
    """
    import torch  # the worker has it loaded already; readers of stored maps need not

    src = np.ascontiguousarray(a, dtype=np.float32).reshape(-1)
    if not src.flags.writeable:  # torch.from_numpy warns on read-only arrays (it is only read here)
        src = src.copy()
    out = np.empty(src.shape, np.float16)
    s, d = torch.from_numpy(src), torch.from_numpy(out)
    for i in range(0, src.size, _F16_CHUNK):
        d[i : i + _F16_CHUNK].copy_(s[i : i + _F16_CHUNK])
    return out.reshape(a.shape)


def decode_heatmap(blob: bytes) -> np.ndarray:
    obj = msgpack.unpackb(blob, raw=False, strict_map_key=True)
    return decode_array(obj, "heatmap", max_bytes=256 * 1024 * 1024, ndim=2).astype(np.float32)


def _result_fields(r: Result) -> list[str]:
    d = r.to_dict()
    flat: list[str] = []
    for key, value in d.items():
        flat += [key, value if isinstance(value, str) else json.dumps(value)]
    return flat


def _parse_result(h: dict[bytes, bytes]) -> Result:
    d = {k.decode(): v.decode() for k, v in h.items()}
    region = json.loads(d["region"])
    return Result(
        frame_id=d["frame_id"],
        line=d["line"],
        station=d["station"],
        category=d["category"],
        model=d["model"],
        model_version=d["model_version"],
        score=float(d["score"]),
        threshold=float(d["threshold"]),
        verdict=d["verdict"],
        heatmap_key=d["heatmap_key"],
        modalities=json.loads(d["modalities"]),
        region=Region(region["area_px"], tuple(region["bbox"])) if region else None,  # type: ignore[arg-type]
        timings=Timings(**json.loads(d["timings"])),
        degraded=json.loads(d.get("degraded", "false")),
    )


class ResultStore:
    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self.settings = settings
        self.client = client or connect(settings)
        self._write = self.client.register_script(_LUA)
        self.p = settings.key_prefix

    # keys
    def result_key(self, frame_id: str) -> str:
        return f"{self.p}:result:{frame_id}"

    def heatmap_key(self, frame_id: str) -> str:
        return f"{self.p}:heatmap:{frame_id}"

    def stream_key(self, line: str) -> str:
        return f"{self.p}:results:{line}"

    def preview_key(self, frame_id: str) -> str:
        return f"{self.p}:preview:{frame_id}"

    @property
    def anomalies_key(self) -> str:
        return f"{self.p}:anomalies"

    @property
    def lines_key(self) -> str:
        return f"{self.p}:lines"

    def write(
        self, results: Sequence[Result], heatmaps: Sequence[bytes], previews: Sequence[bytes] | None = None
    ) -> list[bool]:
        """Write a batch in one round trip; returns, per frame, whether it was new."""
        pipe = self.client.pipeline(transaction=False)
        s = self.settings
        for r, blob, preview in zip(results, heatmaps, previews or [b""] * len(results), strict=True):
            keys = [
                self.result_key(r.frame_id),
                r.heatmap_key,
                self.stream_key(r.line),
                self.lines_key,
                self.anomalies_key,
                self.preview_key(r.frame_id),
            ]
            args: list[Any] = [
                s.result_ttl_s,
                s.stream_maxlen,
                blob,
                r.frame_id,
                r.line,
                r.verdict,
                repr(r.score),
                preview,
                r.station,
                repr(r.threshold),
                r.category,
            ]
            self._write(keys=keys, args=args + _result_fields(r), client=pipe)
        return [bool(x) for x in pipe.execute()]

    # Publish-once marks for alerts ("alerted", by frame id) and dead letters ("dead", by source
    # topic/partition/offset): claim before publishing, confirm after the broker acked. A claim
    # left "pending" by a worker that died mid-publish is never re-sent (at most once); such ids
    # are listed in the ``unconfirmed:<kind>`` set to reconcile. Frame ids are chosen by producers, so every
    # key built from one sits after a per-frame word (result, heatmap, preview, alerted) that no internal key
    # uses: no frame id (``unconfirmed``, ``stats``...) can reach an internal key.
    def mark_key(self, kind: str, ident: str) -> str:
        return f"{self.p}:{kind}:{ident}"

    def unconfirmed_key(self, kind: str) -> str:
        return f"{self.p}:unconfirmed:{kind}"

    def claim(self, kind: str, ids: Sequence[str], owner: str) -> list[bool]:
        pipe = self.client.pipeline(transaction=False)
        for ident in ids:
            pipe.set(self.mark_key(kind, ident), f"pending:{owner}", nx=True, ex=self.settings.result_ttl_s)
        return [bool(x) for x in pipe.execute()]

    def marks(self, kind: str, ids: Sequence[str]) -> list[str | None]:
        return (
            [v.decode() if v else None for v in self.client.mget([self.mark_key(kind, i) for i in ids])] if ids else []
        )

    def confirm(self, kind: str, ids: Sequence[str]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for ident in ids:
            pipe.set(self.mark_key(kind, ident), "sent", ex=self.settings.result_ttl_s)
        pipe.execute()

    def release(self, kind: str, ids: Sequence[str]) -> None:
        """Drop our claims after a failed publish so the redelivered batch can publish."""
        if ids:
            self.client.delete(*[self.mark_key(kind, i) for i in ids])

    def note_unconfirmed(self, kind: str, ids: Sequence[str]) -> None:
        if ids:
            self.client.sadd(self.unconfirmed_key(kind), *ids)

    def unconfirmed(self, kind: str) -> set[str]:
        return {v.decode() for v in self.client.smembers(self.unconfirmed_key(kind))}

    def count(self, field: str, n: int = 1) -> None:
        """Pipeline-wide counters (redeliveries, dead letters...) in one ``stats`` hash."""
        self.client.hincrby(f"{self.p}:stats", field, n)

    def stats(self) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.client.hgetall(f"{self.p}:stats").items()}

    def record_worker(self, worker_id: str, **fields: str) -> None:
        """Operator-facing facts about a worker (partitions, models, last seen); expire with it."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(f"{self.p}:worker:{worker_id}", mapping=fields)
        pipe.expire(f"{self.p}:worker:{worker_id}", 3600)
        pipe.execute()

    def count_processed(self, worker_id: str, n: int) -> None:
        self.client.hincrby(f"{self.p}:worker:{worker_id}", "processed", n)

    # reading (demo, tests, later the operator view)
    def read_result(self, frame_id: str) -> Result | None:
        h = self.client.hgetall(self.result_key(frame_id))
        return _parse_result(h) if h else None

    def read_results(self, frame_ids: Sequence[str]) -> dict[str, Result]:
        pipe = self.client.pipeline(transaction=False)
        for fid in frame_ids:
            pipe.hgetall(self.result_key(fid))
        return {fid: _parse_result(h) for fid, h in zip(frame_ids, pipe.execute(), strict=True) if h}

    def lines(self) -> list[str]:
        return sorted(x.decode() for x in self.client.smembers(self.lines_key))

    def stream_entries(self, key: str, n: int) -> list[dict[str, Any]]:
        """The newest ``n`` entries of a results or anomalies stream, newest first, with ``time_ms`` from the entry
        id."""
        out = []
        for entry_id, fields in self.client.xrevrange(key, count=n):
            d: dict[str, Any] = {k.decode(): v.decode() for k, v in fields.items()}
            d["time_ms"] = int(entry_id.decode().split("-")[0])
            out.append(d)
        return out

    def read_heatmap(self, key: str) -> np.ndarray | None:
        blob = self.client.get(key)
        return decode_heatmap(blob) if blob else None

    def workers(self) -> dict[str, dict[str, str]]:
        out = {}
        for key in self.client.scan_iter(f"{self.p}:worker:*"):
            out[key.decode().rsplit(":", 1)[1]] = {k.decode(): v.decode() for k, v in self.client.hgetall(key).items()}
        return out
