"""The one interface every method implements, and the registry that finds them.

``fit`` on defect-free frames, ``score`` a batch into image scores and pixel maps,
``save``/``load`` through ``torch.save`` of plain tensors and JSON (loaded with
``weights_only=True``, so a model file can never execute code).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any, ClassVar, Protocol

import numpy as np
import torch

from .catalog import METHODS

FORMAT_VERSION = 1


class FrameLike(Protocol):
    """Anything with an aligned image and organized cloud: schemas.Frame, dataset samples."""

    rgb: np.ndarray  # H×W×3 uint8
    xyz: np.ndarray  # H×W×3 float32, zeros = no point


@dataclass
class AnomalyOutput:
    """What ``score`` returns: one score per frame and one map per frame at input resolution."""

    image_scores: np.ndarray  # (B,) float32
    pixel_maps: list[np.ndarray]  # B arrays H_i×W_i float32 (frames in a batch may differ in size)
    modalities: list[list[str]] = field(default_factory=list)  # per frame, which inputs contributed
    degraded: list[bool] = field(default_factory=list)  # per frame: scored without an input the model was trained on

    def __post_init__(self) -> None:
        if not self.degraded:  # methods that never degrade need not say so
            self.degraded = [False] * len(self.image_scores)
        n = len(self.image_scores)
        lengths = {
            "pixel_maps": len(self.pixel_maps),
            "modalities": len(self.modalities),
            "degraded": len(self.degraded),
        }
        if any(v != n for v in lengths.values()):  # callers zip these with the batch's frames
            raise ValueError(f"AnomalyOutput for {n} frames has {', '.join(f'{v} {k}' for k, v in lengths.items())}")


class ModelFileError(RuntimeError):
    """A model file that is missing, tampered with, or of another method/format."""


class AnomalyModel(ABC):
    name: ClassVar[str]
    version: str = "0"
    threshold: float = float("inf")
    category: str = ""  # the product category this model was fitted on (routes frames in workers)
    scores_depth_alone: ClassVar[bool] = False  # fused models that score a frame without colour on depth alone

    @abstractmethod
    def fit(self, frames: Iterable[FrameLike], progress: bool = True) -> AnomalyModel: ...

    @abstractmethod
    def score(self, batch: Sequence[FrameLike]) -> AnomalyOutput: ...

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments."""

    @abstractmethod
    def state(self) -> dict[str, torch.Tensor]: ...

    @abstractmethod
    def load_state(self, state: dict[str, torch.Tensor]) -> None: ...

    def to(self, device: str) -> AnomalyModel:
        return self

    @classmethod
    def option_names(cls) -> list[str]:
        """Every keyword the constructor takes (the common ones it uses included)."""
        params = inspect.signature(cls.__init__).parameters.values()
        return [p.name for p in params if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

    def calibrate(self, good: Iterable[FrameLike], target_fpr: float = 0.01) -> float:
        """Set the decision threshold so about ``target_fpr`` of good frames would alert.

        An empirical quantile at 1% needs hundreds of good frames; validation sets are
        usually far smaller and their maximum underestimates the tail. So the threshold
        is the larger of the empirical quantile and a Gaussian tail estimate
        (mean + z·std) of the good scores.
        """
        scores = np.concatenate([self.score(list(chunk)).image_scores for chunk in chunked(good, 8)])
        self.threshold = threshold_from_scores(scores, target_fpr)
        return self.threshold

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        blob = {
            "format": FORMAT_VERSION,
            "method": self.name,
            "version": self.version,
            "threshold": float(self.threshold),
            "category": self.category,
            "config": json.dumps(self.config()),
            "state": {k: v.detach().cpu().contiguous() for k, v in self.state().items()},
        }
        # Atomic: a worker watching the folder for new versions never loads a half-written file.
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        torch.save(blob, tmp)
        os.replace(tmp, path)
        return path


def required_inputs(model: AnomalyModel) -> tuple[str, ...]:
    """The inputs a frame must carry for ``model`` to score it: a 3D-only model needs the cloud, a colour-only
    one the image; a fused model scores a frame without depth on colour (degraded, flagged) and, if it
    ``scores_depth_alone``, a frame without colour on depth; otherwise it needs colour."""
    modality = getattr(model, "modality", "both")
    if modality in ("rgb", "xyz"):
        return (modality,)
    return () if model.scores_depth_alone else ("rgb",)


def colour_missing(frames: Sequence[Any]) -> np.ndarray:
    """Per frame: the image is the all-black stand-in of a station without a colour camera (as an all-zero
    point means "no measurement", an all-zero image means "no image")."""
    return np.array([not f.rgb.any() for f in frames], dtype=bool)


def with_all_inputs(frames: Sequence[Any]) -> list[Any]:
    """Frames with a missing input (a 2D-only or 3D-only station: ``rgb``/``xyz`` is None) given its empty
    stand-in, so every method sees the arrays it was written for: a black image (ignored by 3D-only models)
    or an all-zero cloud (MVTec 3D-AD's "no measurement", which fused models score degraded)."""
    out = []
    for f in frames:
        if f.rgb is not None and f.xyz is not None:
            out.append(f)
            continue
        h, w = f.shape
        out.append(
            dataclasses.replace(
                f,
                rgb=f.rgb if f.rgb is not None else np.zeros((h, w, 3), np.uint8),
                xyz=f.xyz if f.xyz is not None else np.zeros((h, w, 3), np.float32),
            )
        )
    return out


def threshold_from_scores(scores: np.ndarray, target_fpr: float) -> float:
    """The larger of the empirical (1 - target_fpr) quantile and the Gaussian tail mean + z·std."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) < 2:
        raise ValueError("calibration needs at least 2 good frames")
    z = float(NormalDist().inv_cdf(1 - target_fpr))
    return max(float(np.quantile(scores, 1 - target_fpr)), float(scores.mean() + z * scores.std(ddof=1)))


REGISTRY: dict[str, type[AnomalyModel]] = {}


def register(cls: type[AnomalyModel]) -> type[AnomalyModel]:
    """Add a method; it must be listed in ``catalog.METHODS`` too, where the command line finds it without torch."""
    if cls.name not in METHODS:
        raise ValueError(f"method {cls.name!r} is not listed in duoscan.models.catalog.METHODS")
    REGISTRY[cls.name] = cls
    return cls


# Passed by every caller (CLI, evaluator, worker); a method that has no use for one ignores it.
COMMON_OPTIONS = ("modality", "device", "cache_dir")


class MethodOptionError(ValueError):
    """An option the method does not take (a typo would otherwise train the defaults under an ablation's name)."""


def method_options(method: str) -> list[str]:
    """The options ``method`` takes besides the common ones, sorted."""
    if method not in REGISTRY:
        raise MethodOptionError(f"unknown method {method!r} (known: {', '.join(sorted(REGISTRY))})")
    return sorted(k for k in REGISTRY[method].option_names() if k not in COMMON_OPTIONS)


def check_options(method: str, options: Iterable[str]) -> None:
    """Raise :class:`MethodOptionError` naming the known options if ``options`` holds one ``method`` does not take."""
    known = method_options(method)
    if unknown := sorted(set(options) - set(known) - set(COMMON_OPTIONS)):
        raise MethodOptionError(
            f"{method} has no option {', '.join(map(repr, unknown))}; its options are {', '.join(known)}"
        )


def create(method: str, **config: Any) -> AnomalyModel:
    """Instantiate a registered method. Options it does not take are an error, except the common ones
    (``modality``, ``device``, ``cache_dir``), which a method without them ignores (e.g. the baseline)."""
    check_options(method, config)
    cls = REGISTRY[method]
    accepted = cls.option_names()
    return cls(**{k: v for k, v in config.items() if k in accepted})


def load_model(path: str | Path, device: str = "cpu", **runtime: Any) -> AnomalyModel:
    """Load a model file safely (``weights_only=True``); raise :class:`ModelFileError` if it is bad.

    ``runtime`` options that are not part of the saved model (e.g. ``cache_dir``) are passed
    to methods that take them.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(
            f"{path} is not a duoscan model file (not a torch archive); train one with `duoscan train`"
        )
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        if (
            type(exc).__name__ == "UnpicklingError"
        ):  # torch's own message suggests turning weights_only off: never say that
            raise ModelFileError(
                f"{path} is not a valid duoscan model file: it holds Python objects besides tensors, "
                f"which are refused because loading them could run code; train it again with `duoscan train`"
            ) from None
        raise ModelFileError(
            f"{path} is not a valid duoscan model file (unreadable: {type(exc).__name__}); train it again with "
            "`duoscan train`"
        ) from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT_VERSION or "method" not in blob:
        raise ModelFileError(f"{path} is not a duoscan model file of format {FORMAT_VERSION}")
    try:
        model = create(blob["method"], **{**json.loads(blob["config"]), **runtime})
        model.version = str(blob["version"])
        model.threshold = float(blob["threshold"])
        model.category = str(blob.get("category", ""))
        model.load_state(blob["state"])
    except Exception as exc:
        raise ModelFileError(f"{path}: cannot restore {blob.get('method')!r} model ({exc})") from None
    return model.to(device)


def chunked(items: Iterable[Any], n: int) -> Iterable[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def resolve_device(device: str = "auto") -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        return "cpu"
    return device
