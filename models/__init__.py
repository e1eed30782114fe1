"""The science: features, methods, training and metrics. Imports nothing from Kafka or Redis."""

from . import baseline as _baseline  # noqa: F401  (registers the method)
from . import bridgenet as _bridgenet  # noqa: F401
from . import btf as _btf  # noqa: F401
from . import cmdr as _cmdr  # noqa: F401
from . import mafr as _mafr  # noqa: F401
from . import patchcore as _patchcore  # noqa: F401
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
