"""Seconds-long checks that the broker and Redis answer, run before a command starts long work, so a
missing service is one clear line at once instead of a minute of client retries and error logs."""

from __future__ import annotations

import socket

from .config import Settings, mask_url
from .errors import UserError, broker_unreachable, redis_unreachable

TIMEOUT_S = 3.0


def broker(settings: Settings, timeout_s: float = TIMEOUT_S) -> None:
    """At least one bootstrap server accepts a TCP connection (the clients then find the rest)."""
    for server in settings.bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout_s):
                return
        except (OSError, ValueError):
            continue
    raise UserError(broker_unreachable(settings.bootstrap_servers))


def redis(settings: Settings, timeout_s: float = TIMEOUT_S) -> None:
    """Redis answers a PING with our credentials (a wrong password is its own error)."""
    import redis as redis_py

    from .redis_client import check_connection, connect

    client = connect(settings)
    client.connection_pool.connection_kwargs.update(socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        check_connection(client, settings)
    except redis_py.ConnectionError as exc:
        raise UserError(redis_unreachable(mask_url(settings.redis_url), str(exc))) from None
    finally:
        client.close()
