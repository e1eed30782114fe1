"""One way to open a Redis connection (URL, credentials, TLS, timeouts) and to check it once at startup."""

from __future__ import annotations

import redis

from .config import Settings, mask_url
from .security import redis_kwargs


class RedisAuthError(RuntimeError):
    """Redis refused our credentials: a configuration problem, not an outage (no retry helps)."""


def connect(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=10,
        socket_connect_timeout=5,
        health_check_interval=10,
        **redis_kwargs(settings),
    )


def check_connection(client: redis.Redis, settings: Settings) -> None:
    """Ping once at startup so a wrong password fails loudly with what to set, not deep in a batch."""
    where = mask_url(settings.redis_url)
    try:
        client.ping()
    except redis.AuthenticationError as exc:  # redis-py raises it for NOAUTH and WRONGPASS replies
        hint = "set DUOSCAN_REDIS_PASSWORD (and DUOSCAN_REDIS_USERNAME for an ACL user)"
        raise RedisAuthError(f"Redis at {where} refused authentication ({exc}); {hint}") from None
