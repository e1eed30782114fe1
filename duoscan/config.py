"""All configuration in one typed place. Every field is overridable as ``DUOSCAN_<FIELD>``.

Resolution: defaults < the embedded services' state file written by ``duoscan up``
(broker and Redis addresses only) < environment variables < explicit overrides.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

STATE_DIR = Path(os.environ.get("DUOSCAN_STATE_DIR", ".duoscan"))
SERVICES_FILE = STATE_DIR / "services.json"
SECRET_FIELDS = ("redis_password",)


@dataclass(frozen=True)
class Settings:
    # Kafka
    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = "frames."
    dlq_topic: str = "frames.dlq"
    alerts_topic: str = "alerts"
    partitions: int = 4
    group_id: str = "duoscan-workers"
    session_timeout_s: float = 6.0  # Tansu holds a join ~half of this; 6 s / 0.5 s measured to work
    heartbeat_s: float = 0.5
    # Tansu holds every fetch for the full max wait even when data is there, so this
    # bounds consumer latency; real Kafka answers as soon as data arrives.
    fetch_max_wait_ms: int = 50
    max_frame_bytes: int = 64 * 1024 * 1024  # topic max.message.bytes and client limits follow this
    codec: str = "zstd"  # none | zstd | lz4
    xyz_float16: bool = False
    # Workers
    max_batch: int = 8
    max_wait_s: float = 0.05
    device: str = "auto"  # auto | cpu | cuda
    model_path: str = "models/baseline.pt"
    new_topic_poll_s: float = 30.0  # how often a worker looks for new line topics
    # Redis
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_password: str = ""
    key_prefix: str = "duoscan"
    result_ttl_s: int = 7 * 24 * 3600
    stream_maxlen: int = 10_000
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, **overrides: Any) -> "Settings":
        values: dict[str, Any] = {}
        if SERVICES_FILE.exists():
            state = json.loads(SERVICES_FILE.read_text())
            values.update({k: state[k] for k in ("bootstrap_servers", "redis_url") if k in state})
        for f in fields(cls):
            env = os.environ.get(f"DUOSCAN_{f.name.upper()}")
            if env is not None and f.name != "extra":
                values[f.name] = _parse(env, f.type)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)

    def frames_topic(self, line: str) -> str:
        return f"{self.topic_prefix}{line}"

    def is_frames_topic(self, topic: str) -> bool:
        return topic.startswith(self.topic_prefix) and topic != self.dlq_topic and not topic.startswith("__")

    def to_env(self) -> dict[str, str]:
        """The settings as ``DUOSCAN_*`` variables, for child processes and containers."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "extra":
                out[f"DUOSCAN_{f.name.upper()}"] = str(int(value)) if isinstance(value, bool) else str(value)
        return out

    def masked(self) -> dict[str, Any]:
        """The effective settings with secrets replaced by ``***`` (safe to print or log)."""
        d = dataclasses.asdict(self)
        for name in SECRET_FIELDS:
            if d.get(name):
                d[name] = "***"
        return d


def _parse(raw: str, type_name: Any) -> Any:
    t = str(type_name)
    if t == "bool":
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if t == "int":
        return int(raw)
    if t == "float":
        return float(raw)
    return raw
