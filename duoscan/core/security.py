"""Turn the security settings into what each client library expects.

One place maps ``DUOSCAN_KAFKA_*`` / ``DUOSCAN_REDIS_*`` to kafka-python keyword arguments,
faust (aiokafka) credentials and redis-py connection options, so producers, workers, the
alert follower and the CLI all connect the same way. Secrets only travel inside these
objects; nothing here logs them.
"""

from __future__ import annotations

import ssl
from typing import Any

from .config import Settings


def kafka_kwargs(settings: Settings) -> dict[str, Any]:
    """kafka-python client options for TLS and SASL (empty for PLAINTEXT)."""
    s = settings.check()
    out: dict[str, Any] = {}
    if s.kafka_security_protocol == "PLAINTEXT":
        return out
    out["security_protocol"] = s.kafka_security_protocol
    if "SSL" in s.kafka_security_protocol:
        out.update(
            {
                k: v
                for k, v in (
                    ("ssl_cafile", s.kafka_ssl_cafile),
                    ("ssl_certfile", s.kafka_ssl_certfile),
                    ("ssl_keyfile", s.kafka_ssl_keyfile),
                )
                if v
            }
        )
        out["ssl_check_hostname"] = True
    if s.kafka_security_protocol.startswith("SASL"):
        out.update(
            sasl_mechanism=s.kafka_sasl_mechanism,
            sasl_plain_username=s.kafka_sasl_username,
            sasl_plain_password=s.kafka_sasl_password,
        )
    return out


def ssl_context(cafile: str = "", certfile: str = "", keyfile: str = "") -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=cafile or None)
    if certfile:
        ctx.load_cert_chain(certfile, keyfile or None)
    return ctx


def faust_credentials(settings: Settings) -> Any:
    """faust ``broker_credentials`` matching :func:`kafka_kwargs` (None for PLAINTEXT)."""
    import faust

    s = settings.check()
    if s.kafka_security_protocol == "PLAINTEXT":
        return None
    ctx = (
        ssl_context(s.kafka_ssl_cafile, s.kafka_ssl_certfile, s.kafka_ssl_keyfile)
        if "SSL" in s.kafka_security_protocol
        else None
    )
    if s.kafka_security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=s.kafka_sasl_username,
            password=s.kafka_sasl_password,
            ssl_context=ctx,
            mechanism=s.kafka_sasl_mechanism,
        )
    return faust.SSLCredentials(ctx)


def redis_kwargs(settings: Settings) -> dict[str, Any]:
    """redis-py options for AUTH (password, ACL user) and TLS (``rediss://`` URLs)."""
    s = settings.check()
    out: dict[str, Any] = {}
    if s.redis_password:
        out["password"] = s.redis_password
    if s.redis_username:
        out["username"] = s.redis_username
    if s.redis_url.startswith("rediss://"):
        out.update(
            {
                k: v
                for k, v in (
                    ("ssl_ca_certs", s.redis_ssl_ca_certs),
                    ("ssl_certfile", s.redis_ssl_certfile),
                    ("ssl_keyfile", s.redis_ssl_keyfile),
                )
                if v
            }
        )
    return out
