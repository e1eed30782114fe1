"""The science: features, methods, training and metrics. Imports nothing from Kafka or Redis.

The method modules (and torch) load on first use of a name below, so ``duoscan.models.catalog`` stays light."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from .catalog import METHODS, MODALITIES

if TYPE_CHECKING:
    from .base import (
        REGISTRY,
        AnomalyModel,
        AnomalyOutput,
        FrameLike,
        MethodOptionError,
        ModelFileError,
        check_options,
        create,
        load_model,
        required_inputs,
        resolve_device,
        with_all_inputs,
    )

__all__ = [
    "METHODS",
    "MODALITIES",
    "REGISTRY",
    "AnomalyModel",
    "AnomalyOutput",
    "FrameLike",
    "MethodOptionError",
    "ModelFileError",
    "check_options",
    "create",
    "load_model",
    "required_inputs",
    "resolve_device",
    "with_all_inputs",
]


def __getattr__(name: str) -> object:
    """Load the registry (every method module) the first time one of its names is asked for."""
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    base = import_module(".base", __name__)
    for method in METHODS:
        import_module(f".{method}", __name__)
    value = getattr(base, name)
    globals()[name] = value
    return value
