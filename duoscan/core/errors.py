"""The user-error type and the wording shared by every place that reports an unreachable service."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in what the user asked for; the message says what is wrong and what to do."""


def one_line(message: object) -> str:
    return " ".join(str(message).split())


def broker_unreachable(where: str, detail: str = "") -> str:
    because = f" ({one_line(detail)})" if detail else ""
    return f"no Kafka broker answers at {where}{because}: start one (`duoscan up`) or set DUOSCAN_BOOTSTRAP_SERVERS"


def redis_unreachable(where: str, detail: str = "") -> str:
    because = f" ({one_line(detail)})" if detail else ""
    return f"Redis at {where} is not reachable{because}: start it (`duoscan up`) or set DUOSCAN_REDIS_URL"
