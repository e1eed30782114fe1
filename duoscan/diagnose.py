"""Which exceptions are the user's to fix (bad arguments, configuration, data, an unreachable service),
and the one line that says so. Anything else is a bug and keeps its traceback behind ``--debug``."""

from __future__ import annotations

import errno
import sys

from .core.config import ConfigError, Settings, mask_url
from .core.errors import UserError, broker_unreachable, one_line, redis_unreachable
from .core.redis_client import RedisAuthError

# What an OS error on a path the user named means, in their words.
FILE_ERRORS = {
    errno.ENOENT: "does not exist",
    errno.ENOTDIR: "is not a folder",
    errno.EISDIR: "is a folder, not a file",
    errno.EACCES: "is not accessible (permissions)",
    errno.ENOSPC: "cannot be written: the disk is full",
}


def describe(exc: BaseException) -> str | None:
    """The one-line message for a user error, or None for an unexpected exception."""
    from duoscan.schemas import SchemaError

    # the models' own errors exist only once their module is loaded: no torch import just to classify an error
    models = sys.modules.get("duoscan.models.base")
    ours = (UserError, ConfigError, SchemaError) + ((models.ModelFileError, models.MethodOptionError) if models else ())
    if isinstance(exc, ours):
        return one_line(exc)
    if isinstance(exc, OSError) and exc.errno in FILE_ERRORS:
        what = FILE_ERRORS[exc.errno]
        return f"{exc.filename} {what}" if exc.filename else one_line(exc)
    if isinstance(exc, FileNotFoundError):  # raised with a message of our own (dataset readers)
        return one_line(exc)
    return _service_error(exc)


def _service_error(exc: BaseException) -> str | None:
    """Kafka or Redis out of reach, or refusing us."""
    import redis
    from kafka import errors as kafka_errors

    from duoscan.producers.sdk import FrameTooLargeError, PublishError

    if isinstance(exc, (PublishError, FrameTooLargeError, RedisAuthError)):
        return one_line(exc)
    unreachable = tuple(
        getattr(kafka_errors, n)
        for n in ("NoBrokersAvailable", "KafkaConnectionError", "KafkaTimeoutError")
        if hasattr(kafka_errors, n)
    )
    if isinstance(exc, unreachable):
        return broker_unreachable(_configured("bootstrap_servers"), str(exc))
    if isinstance(exc, redis.ConnectionError):
        return redis_unreachable(mask_url(_configured("redis_url")), str(exc))
    return None


def _configured(name: str) -> str:
    """Where the settings point (the setting's name when they cannot be read), for the message."""
    try:
        return str(getattr(Settings.load(), name))
    except Exception:  # the message must come out even when the configuration is what is broken
        return f"DUOSCAN_{name.upper()}"
