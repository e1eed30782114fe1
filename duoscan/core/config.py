"""All configuration in one typed place. Every field is overridable as ``DUOSCAN_<FIELD>``.

Resolution: defaults < the embedded services' state file written by ``duoscan up``
(broker and Redis addresses only) < a TOML file named by ``DUOSCAN_CONFIG_FILE``
(keys are the field names below) < environment variables < explicit overrides.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

SECRET_FIELDS = ("redis_password", "kafka_sasl_password")
RUNTIMES = ("auto", "torch", "onnx")
DEVICE_PATTERN = r"auto|cpu|cuda(:\d+)?"
CODECS = (
    "none",
    "zstd",
    "lz4",
    "zstd-delta",
    "lz4-delta",
)  # schemas.arrays.CODECS (tested equal; config imports nothing)
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def state_dir() -> Path:
    """Where `duoscan up` records the services it started and their logs: one place per user, whatever the
    working directory (``DUOSCAN_STATE_DIR``, else ``$XDG_STATE_HOME/duoscan``, else ``~/.local/state/duoscan``)."""
    if os.environ.get("DUOSCAN_STATE_DIR"):
        return Path(os.environ["DUOSCAN_STATE_DIR"])
    return (
        Path(os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")) / "duoscan"
    )  # expanduser: no error without a home


def services_file() -> Path:
    return state_dir() / "services.json"


def cache_dir() -> Path:
    """Derived data that may be deleted at any time (feature cache, exported ONNX files)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")) / "duoscan"


class ConfigError(ValueError):
    """A setting that cannot work; the message names the variable and what it accepts."""


@dataclass(frozen=True)
class Settings:
    # Kafka
    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = "frames."
    dlq_topic: str = "frames.dlq"
    alerts_topic: str = "alerts"
    partitions: int = 4  # per line topic: the most workers that can share one line
    replication_factor: int = 1  # of topics created by `duoscan up` / `duoscan topics` (3 on a production cluster)
    group_id: str = "duoscan-workers"
    session_timeout_s: float = 6.0  # Tansu holds a join ~half of this; 6 s / 0.5 s measured to work
    heartbeat_s: float = 0.5
    # Tansu answers a fetch that finds records at once and holds one that finds none for up to about
    # half this wait, so it bounds an idle line's latency; real Kafka answers as soon as data arrives.
    fetch_max_wait_ms: int = 50
    max_frame_bytes: int = 64 * 1024 * 1024  # topic max.message.bytes and client limits follow this
    frames_retention_ms: int = 24 * 3600 * 1000  # how long frame topics keep frames (replay window after an outage)
    # Kafka security (see duoscan/security.py): TLS with SSL/SASL_SSL, SASL PLAIN or SCRAM
    kafka_security_protocol: str = "PLAINTEXT"  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    kafka_sasl_mechanism: str = "PLAIN"  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = ""
    kafka_ssl_cafile: str = ""  # CA bundle that signed the brokers' certificates
    kafka_ssl_certfile: str = ""  # client certificate (mutual TLS)
    kafka_ssl_keyfile: str = ""
    # Producers: how long a frame may wait in the client buffer while the broker is unreachable
    # before flush() fails loudly with PublishError (never a silent drop).
    producer_delivery_timeout_s: float = 120.0
    producer_max_block_s: float = 60.0  # send() blocks this long for metadata / buffer space, then raises
    codec: str = "zstd-delta"  # none | zstd | lz4 | zstd-delta | lz4-delta (lossless; -delta: ~0.27x raw at 400 px)
    xyz_float16: bool = False
    # Workers
    max_batch: int = 8
    max_wait_s: float = 0.05
    device: str = "auto"  # auto | cpu | cuda
    # CNN backbones: auto = onnxruntime on CPU (5-7x faster than eager torch here), torch on CUDA
    backbone_runtime: str = "auto"  # auto | torch | onnx
    onnx_cache_dir: str = ""  # exported .onnx files (default ~/.cache/duoscan/onnx)
    torch_threads: int = 0  # intra-op threads per worker process; 0 = all cores
    # NumPy/SciPy BLAS threads per process (0 = the library's default, one per core). Per-frame work already
    # runs one frame per core (models/parallel.py); OpenBLAS threads on top of that oversubscribe the cores.
    blas_threads: int = 1
    gil_switch_s: float = (
        0.05  # worker's sys.setswitchinterval: the event loop would otherwise take the GIL from scoring every 5 ms
    )
    model_path: str = "models/baseline.pt"
    routes_file: str = ""  # line/station/category -> model table; default: routes.toml beside the models
    model_poll_s: float = 5.0  # how often a worker looks for new model versions (0 = never)
    new_topic_poll_s: float = 30.0  # how often a worker looks for new line topics
    # Redis
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_password: str = ""
    redis_username: str = ""  # Redis 6+ ACL user; empty = the default user
    # TLS: use a rediss:// URL; these point at the CA / client certificate when needed
    redis_ssl_ca_certs: str = ""
    redis_ssl_certfile: str = ""
    redis_ssl_keyfile: str = ""
    redis_retry_max_s: float = 5.0  # cap of the exponential backoff while Redis is unreachable
    key_prefix: str = "duoscan"
    result_ttl_s: int = 7 * 24 * 3600
    stream_maxlen: int = 10_000
    preview_px: int = 320  # RGB + depth preview per frame for the operator view, longest side (0 = none)
    metrics_port: int = 0  # Prometheus /metrics of this process (0 = off); one port per process
    metrics_addr: str = "0.0.0.0"
    config_file: str = ""  # optional TOML file of these settings (env vars still win)
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        values: dict[str, Any] = {}
        state_file = services_file()
        if state_file.exists():
            try:
                state = json.loads(state_file.read_text())
            except (OSError, ValueError):
                raise ConfigError(f"{state_file} is not readable JSON: run `duoscan down` to clear it") from None
            values.update({k: state[k] for k in ("bootstrap_servers", "redis_url") if k in state})
        config_file = overrides.get("config_file") or os.environ.get("DUOSCAN_CONFIG_FILE")
        if config_file:
            values.update(_read_file(Path(config_file)))
        for f in fields(cls):
            env = os.environ.get(f"DUOSCAN_{f.name.upper()}")
            if env is not None and f.name != "extra":
                values[f.name] = _parse(f"DUOSCAN_{f.name.upper()}", env, f.type)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @classmethod
    def isolated(cls, tag: str, **overrides: Any) -> Settings:
        """Settings whose topics, consumer group and Redis keys are all named after ``tag``, so a test, a drill or
        a benchmark run never reads another's messages or results on a shared broker and Redis."""
        return cls.load(
            topic_prefix=f"{tag}.frames.",
            dlq_topic=f"{tag}.frames.dlq",
            alerts_topic=f"{tag}.alerts",
            group_id=f"{tag}-workers",
            key_prefix=tag,
            **overrides,
        )

    def replace(self, **changes: Any) -> Settings:
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
        d["redis_url"] = mask_url(d["redis_url"])
        return d

    def check(self) -> Settings:
        """Raise ``ConfigError`` naming the variable when a setting cannot work."""
        for name, low in _MINIMA.items():
            if not getattr(self, name) >= low:  # also refuses NaN
                raise ConfigError(f"DUOSCAN_{name.upper()} must be at least {low}, not {getattr(self, name)}")
        for name, allowed in (("codec", CODECS), ("backbone_runtime", RUNTIMES)):
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"DUOSCAN_{name.upper()} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}"
                )
        if self.heartbeat_s >= self.session_timeout_s:
            raise ConfigError(
                f"DUOSCAN_HEARTBEAT_S ({self.heartbeat_s:g}) must be below DUOSCAN_SESSION_TIMEOUT_S "
                f"({self.session_timeout_s:g})"
            )
        if self.kafka_security_protocol not in SECURITY_PROTOCOLS:
            raise ConfigError(
                f"DUOSCAN_KAFKA_SECURITY_PROTOCOL must be one of {', '.join(SECURITY_PROTOCOLS)}, not "
                f"{self.kafka_security_protocol!r}"
            )
        if self.kafka_security_protocol.startswith("SASL"):
            if self.kafka_sasl_mechanism not in SASL_MECHANISMS:
                raise ConfigError(
                    f"DUOSCAN_KAFKA_SASL_MECHANISM must be one of {', '.join(SASL_MECHANISMS)}, not "
                    f"{self.kafka_sasl_mechanism!r}"
                )
            if not (self.kafka_sasl_username and self.kafka_sasl_password):
                raise ConfigError("SASL needs DUOSCAN_KAFKA_SASL_USERNAME and DUOSCAN_KAFKA_SASL_PASSWORD")
        for name in (
            "kafka_ssl_cafile",
            "kafka_ssl_certfile",
            "kafka_ssl_keyfile",
            "redis_ssl_ca_certs",
            "redis_ssl_certfile",
            "redis_ssl_keyfile",
        ):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise ConfigError(f"DUOSCAN_{name.upper()} points at {path}, which is not a file")
        if not re.fullmatch(DEVICE_PATTERN, self.device):
            raise ConfigError(f"DUOSCAN_DEVICE must be auto, cpu, cuda or cuda:N, not {self.device!r}")
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(
                "DUOSCAN_REDIS_URL must start with redis://, rediss:// (TLS) or unix://, not "
                f"{mask_url(self.redis_url)!r}"
            )
        return self


# Lower bounds of the numeric settings (a zero partition count or a negative TTL cannot work).
_MINIMA: dict[str, float] = {
    "partitions": 1,
    "replication_factor": 1,
    "session_timeout_s": 0.1,
    "heartbeat_s": 0.01,
    "fetch_max_wait_ms": 0,
    "max_frame_bytes": 1024,
    "frames_retention_ms": 1,
    "producer_delivery_timeout_s": 0.1,
    "producer_max_block_s": 0.1,
    "max_batch": 1,
    "max_wait_s": 0.0,
    "torch_threads": 0,
    "blas_threads": 0,
    "gil_switch_s": 0.0001,
    "model_poll_s": 0.0,
    "new_topic_poll_s": 0.0,
    "redis_retry_max_s": 0.01,
    "result_ttl_s": 1,
    "stream_maxlen": 1,
    "preview_px": 0,
    "metrics_port": 0,
}


def mask_url(url: str) -> str:
    """``redis://user:secret@host`` -> ``redis://user:***@host``: a password may sit in the URL, also in a
    malformed one (``redis:/admin:pw@host``), so everything before the last ``@`` after the scheme is masked."""
    if "@" not in url:
        return url
    userinfo, _, host = url.rpartition("@")
    scheme, sep, user = userinfo.partition("://")
    if not sep:  # no well-formed scheme: keep what precedes the first ':' (the scheme), mask the rest
        scheme, sep, user = userinfo.partition(":")
        return f"{scheme}{sep}***@{host}"
    name, colon, _ = user.partition(":")
    return f"{scheme}://{name}:***@{host}" if colon else f"{scheme}://***@{host}"


def _read_file(path: Path) -> dict[str, Any]:
    """Settings from a TOML file; unknown keys and wrong types are errors that name the file and key."""
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"DUOSCAN_CONFIG_FILE {path}: {exc}") from None
    types = {f.name: str(f.type) for f in fields(Settings) if f.name != "extra"}
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if key not in types:
            raise ConfigError(f"DUOSCAN_CONFIG_FILE {path}: unknown setting {key!r}")
        want = {"bool": bool, "int": int, "float": (int, float), "str": str}[types[key]]
        if not isinstance(value, want) or (types[key] != "bool" and isinstance(value, bool)):
            raise ConfigError(f"DUOSCAN_CONFIG_FILE {path}: {key} must be a {types[key]}, not {value!r}")
        out[key] = float(value) if types[key] == "float" else value
    return {**out, "config_file": str(path)}


def _parse(variable: str, raw: str, type_name: Any) -> Any:
    t = str(type_name)
    if t == "bool":
        if raw.strip().lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off", ""):
            raise ConfigError(f"{variable} must be true or false (1/0, yes/no, on/off), not {raw!r}")
        return raw.strip().lower() in ("1", "true", "yes", "on")
    try:
        return int(raw) if t == "int" else float(raw) if t == "float" else raw
    except ValueError:
        raise ConfigError(f"{variable} must be {'an integer' if t == 'int' else 'a number'}, not {raw!r}") from None
