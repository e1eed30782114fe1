"""Set-up shared by the methods that score dense RGB / 3D feature maps (btf, mafr, cmdr, ...)."""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import Progress
from torch import nn

from .base import AnomalyModel, FrameLike, MethodOptionError
from .catalog import MODALITIES
from .components import smooth_maps
from .features import FeatureConfig, FeaturePipeline
from .preprocess import Prepared, PreprocessConfig, maps_to_frames


@dataclass(frozen=True)
class FeatureOptions:
    """The options every dense-feature method takes; each method's ``Options`` subclass adds its own (and may
    change a default). What a model file's ``config`` holds, so a saved model rebuilds exactly."""

    modality: str = "both"
    rgb_backbone: str = "efficientnet_lite0"
    resolution: int = 0  # model input side in px; 0: chosen from the training frames (``resolution_for``)
    grid: int = 0  # feature grid side; 0: resolution / 8, the backbone's finest stride
    sigma: float = 4.0  # Gaussian smoothing of the map, in px of a 224-px map (scaled with the resolution)
    seed: int = 0
    # option -> the values it may take, checked on construction
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"modality": tuple(MODALITIES)}

    def __post_init__(self) -> None:
        kinds = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}
        for f in dataclasses.fields(self):
            value, kind = getattr(self, f.name), kinds[str(f.type)]
            if not isinstance(value, kind) or (isinstance(value, bool) and bool not in kind):
                raise MethodOptionError(f"option {f.name} must be {f.type}, not {value!r}")
        for name, allowed in self.CHOICES.items():
            if getattr(self, name) not in allowed:
                raise MethodOptionError(f"{name} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}")
        if self.resolution and (self.resolution < 32 or self.resolution % 8):
            raise MethodOptionError(
                f"resolution must be 0 (from the frames) or a multiple of 8 from 32, not {self.resolution}"
            )
        if self.grid < 0:
            raise MethodOptionError(f"grid must be 0 (resolution / 8) or a positive side, not {self.grid}")

    def settled(self, frame_side: int) -> FeatureOptions:
        """These options with ``resolution`` and ``grid`` fixed: left at 0, they follow the training frames."""
        resolution = self.resolution or resolution_for(frame_side)
        return dataclasses.replace(self, resolution=resolution, grid=self.grid or resolution // 8)

    def px(self, at_224: float) -> float:
        """A length given in px of a 224-px map, in px at this resolution (a smoothing covers the same share of
        the frame at any resolution)."""
        return at_224 * (self.resolution or 224) / 224

    @property
    def xyz_extractors(self) -> list[str]:
        """``xyz_features`` ('+'-joined registry names, concatenated per location) where a method has it."""
        return [f"xyz:{x}" for x in getattr(self, "xyz_features", "fpfh").split("+")]


RESOLUTIONS = (224, 320, 448)


def resolution_for(frame_side: int) -> int:
    """The model resolution for frames whose longer side is ``frame_side`` px: the smallest of ``RESOLUTIONS``
    at or above it, the largest for bigger frames. On the standard profile's tuning seed (400-px frames) each
    step up raised every method's accuracy; a frame is not upsampled past the next step (a 128-px frame is scored
    at 224, as before), and 448 bounds the cost (4× that of 224)."""
    return next((r for r in RESOLUTIONS if r >= frame_side), RESOLUTIONS[-1])


@dataclass(frozen=True)
class NeuralOptions(FeatureOptions):
    """Feature methods that train a network: its seeded Adam loop's settings."""

    epochs: int = 30
    batch_size: int = 8
    lr: float = 1e-3


class FeatureMethod(AnomalyModel):
    """Holds the options, the modality choice and the preprocessing + feature pipeline; moves with ``to``."""

    Options: ClassVar[type[FeatureOptions]] = FeatureOptions
    opts: FeatureOptions
    stats: dict[str, torch.Tensor]

    def __init__(self, cache_dir: str | None = None, device: str = "cpu", **options: Any) -> None:
        self.opts = self.Options(**options)
        self.modality, self.device = self.opts.modality, device
        self.mods = list(MODALITIES[self.modality])
        self.extractors = {"rgb": [f"rgb:{self.opts.rgb_backbone}"], "xyz": self.opts.xyz_extractors}
        self.cache_dir = cache_dir
        self._build_pipeline(self.opts.settled(224))  # until fit settles what is left to the frames
        self.version = "1"
        self.stats = {}
        self._init_state()

    def _build_pipeline(self, opts: FeatureOptions) -> None:
        names = [n for m in self.mods for n in self.extractors[m]]
        self.pipeline = FeaturePipeline(
            names,
            PreprocessConfig(resolution=opts.resolution),
            FeatureConfig(grid=opts.grid),
            self.device,
            self.cache_dir,
        )

    def _settle(self, frames: Iterable[FrameLike]) -> list[FrameLike]:
        """The training frames as a list, with the options left to them (resolution, grid) fixed: every
        method's ``fit`` starts here, so the saved ``config`` holds the settings the model was fitted at."""
        frames = list(frames)
        if not (self.opts.resolution and self.opts.grid):
            side = max((max(f.rgb.shape[:2]) for f in frames), default=224)
            self.opts = self.opts.settled(side)
            self._build_pipeline(self.opts)
        return frames

    def _init_state(self) -> None:
        """The method's own unfitted state (banks, network), set after the options and pipeline."""

    @classmethod
    def option_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls.Options)] + ["cache_dir", "device"]

    def config(self) -> dict[str, Any]:
        return dataclasses.asdict(self.opts)

    def modality_features(
        self, frames: Sequence[FrameLike]
    ) -> tuple[list[Prepared], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Per modality: B×C×G×G features (its extractors concatenated) and B×G×G validity
        (RGB: everywhere; 3D: cells where the first 3D extractor has enough measured points)."""
        prepared, raw = self.pipeline(frames)
        feats = {m: torch.cat([raw[n][0] for n in self.extractors[m]], dim=1) for m in self.mods}
        valid = {m: (raw[self.extractors[m][0]][1] > 0).float() for m in self.mods}
        return prepared, feats, valid

    def _features_on_device(
        self, frames: Sequence[FrameLike]
    ) -> tuple[list[Prepared], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        prepared, feats, valid = self.modality_features(frames)
        return (
            prepared,
            {m: f.to(self.device) for m, f in feats.items()},
            {m: v.to(self.device) for m, v in valid.items()},
        )

    def _gather(
        self, frames: Sequence[FrameLike], bar: Progress, label: str, prepared: list[Prepared] | None = None
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Features and validity of all ``frames``, in chunks of 8, with a progress bar; the
        preprocessed frames are appended to ``prepared`` when a list is given."""
        feats: dict[str, list[torch.Tensor]] = {m: [] for m in self.mods}
        valid: dict[str, list[torch.Tensor]] = {m: [] for m in self.mods}
        task = bar.add_task(label, total=len(frames))
        for i in range(0, len(frames), 8):
            p, f, v = self._features_on_device(frames[i : i + 8])
            if prepared is not None:
                prepared += p
            for m in self.mods:
                feats[m].append(f[m])
                valid[m].append(v[m])
            bar.advance(task, len(frames[i : i + 8]))
        return {m: torch.cat(feats[m]) for m in self.mods}, {m: torch.cat(valid[m]) for m in self.mods}

    def _fit_depth_share(self, valid: dict[str, torch.Tensor]) -> None:
        """Remember the training frames' typical share of valid 3D cells (for :meth:`_depth_missing`)."""
        if "xyz" in valid:
            self.stats["xyz_valid_share"] = valid["xyz"].mean()

    def _depth_missing(self, valid: dict[str, torch.Tensor], below: float) -> torch.Tensor:
        """Per frame (CPU bool): fewer valid 3D cells than ``below`` × the training frames' share,
        i.e. an empty or mostly invalid point cloud. Always False for models without 3D input."""
        if "xyz" not in valid:
            return torch.zeros(next(iter(valid.values())).shape[0], dtype=torch.bool)
        share = valid["xyz"].flatten(1).mean(1)
        return (share < below * self.stats["xyz_valid_share"]).cpu()

    def _part_gated(self, valid: dict[str, torch.Tensor], prepared: Sequence[Prepared]) -> dict[str, torch.Tensor]:
        """``valid`` with RGB counted only on grid cells that hold a measured foreground point, for
        fused models. Late fusion sums maps, so without this the RGB error on the conveyor or fixture
        (not a part defect) would enter every map; a product with the 3D map gated it implicitly.
        Holes are not filled: a ring's hole is background. A frame with no foreground keeps RGB everywhere."""
        if len(self.mods) < 2:
            return valid
        fg = torch.from_numpy(np.stack([p.valid for p in prepared])).float()[:, None]
        cells = (F.adaptive_max_pool2d(fg, valid["rgb"].shape[-1])[:, 0] > 0).float()
        cells[cells.flatten(1).amax(1) == 0] = 1.0
        return {**valid, "rgb": cells.to(valid["rgb"].device)}

    def _fit_standardisation(self, x: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]) -> None:
        """Centre per channel and use one scale per modality (see btf): the valid cells' mean
        squared distance from the centre becomes the number of channels."""
        for m in self.mods:
            pix = x[m].permute(0, 2, 3, 1)[valid[m] > 0]
            mean = pix.mean(0)
            self.stats[f"{m}_mean"] = mean
            self.stats[f"{m}_scale"] = ((pix - mean) ** 2).sum(1).mean().sqrt().clamp_min(1e-6) / np.sqrt(pix.shape[1])

    def _standardise(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {m: (x - self.stats[f"{m}_mean"].view(1, -1, 1, 1)) / self.stats[f"{m}_scale"] for m, x in feats.items()}

    @staticmethod
    def _in_chunks(
        fn: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]], x: dict[str, torch.Tensor], n: int = 8
    ) -> dict[str, torch.Tensor]:
        """``fn`` applied to ``n`` frames at a time (bounded memory), its per-key outputs concatenated."""
        total = next(iter(x.values())).shape[0]
        parts = [fn({m: v[i : i + n] for m, v in x.items()}) for i in range(0, total, n)]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def _to_maps(self, grid_map: torch.Tensor, sigma: float | None = None) -> np.ndarray:
        """B×G×G grid scores -> B×R×R at the model resolution, bilinearly upsampled and Gaussian-smoothed
        (σ in px of a 224-px map; default ``sigma``), on the CPU."""
        o = self.opts
        return smooth_maps(grid_map, o.resolution, o.px(o.sigma if sigma is None else sigma)).cpu().numpy()

    @staticmethod
    def _frame_maps(maps: np.ndarray | torch.Tensor, prepared: Sequence[Prepared]) -> list[np.ndarray]:
        return maps_to_frames(torch.as_tensor(maps), prepared)

    def _move_pipeline(self, device: str) -> None:
        self.device = device
        self.pipeline.device = device


class NeuralFeatureMethod(FeatureMethod):
    """A feature method whose state is a torch network trained on standardised features plus
    named statistics (``stats``); subclasses build the network (``_net``) and define the loss."""

    Options: ClassVar[type[NeuralOptions]] = NeuralOptions
    opts: NeuralOptions
    net: nn.Module | None

    def _init_state(self) -> None:
        self.net = None
        self.loss_history: list[float] = []

    @abstractmethod
    def _net(self, dims: dict[str, int]) -> nn.Module:
        """The untrained network for these per-modality channel counts."""

    def state(self) -> dict[str, torch.Tensor]:
        assert self.net is not None
        return {
            **{f"net.{k}": v for k, v in self.net.state_dict().items()},
            **{f"stats.{k}": v for k, v in self.stats.items()},
            "loss_history": torch.tensor(self.loss_history, dtype=torch.float32),  # the training curve, to check
        }

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.loss_history = state["loss_history"].tolist() if "loss_history" in state else []
        self.stats = {k[6:]: v.float() for k, v in state.items() if k.startswith("stats.")}
        self.net = self._net({m: int(self.stats[f"{m}_mean"].numel()) for m in self.mods})
        self.net.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
        self.to(self.device)

    def to(self, device: str) -> NeuralFeatureMethod:
        self._move_pipeline(device)
        self.stats = {k: v.to(device) for k, v in self.stats.items()}
        if self.net is not None:
            self.net.to(device).eval()
        return self

    def _train(
        self,
        x: dict[str, torch.Tensor],
        valid: dict[str, torch.Tensor],
        loss: Callable[[dict[str, torch.Tensor], dict[str, torch.Tensor]], torch.Tensor],
        bar: Progress,
    ) -> None:
        """Seeded Adam over shuffled mini-batches of the (standardised) features ``x``;
        ``loss(features, validity)`` of one batch. Leaves the network in eval mode."""
        self._train_epochs(lambda epoch: (x, valid) if epoch == 0 else None, loss, bar)

    def _train_epochs(
        self,
        epoch_data: Callable[[int], tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]] | None],
        loss: Callable[[dict[str, torch.Tensor], dict[str, torch.Tensor]], torch.Tensor],
        bar: Progress,
    ) -> None:
        """As :meth:`_train`, with the data of each epoch from ``epoch_data(epoch)`` (None: keep the last
        epoch's), so a method can draw new training samples as it trains. ``loss_history`` gets each epoch's
        mean loss."""
        o = self.opts
        torch.manual_seed(o.seed)
        first = epoch_data(0)
        assert first is not None, "epoch_data(0) must give the first epoch's data"
        x, aux = first
        self.net = self._net({m: x[m].shape[1] for m in self.mods}).to(self.device)
        opt = torch.optim.Adam(self.net.parameters(), lr=o.lr)
        task = bar.add_task(f"{self.name}[{self.modality}]: training", total=o.epochs)
        self.net.train()
        for epoch in range(o.epochs):
            if epoch and (new := epoch_data(epoch)) is not None:
                x, aux = new
            n = next(iter(x.values())).shape[0]
            order = torch.randperm(n)
            total = 0.0
            for i in range(0, n, o.batch_size):
                idx = order[i : i + o.batch_size]
                value = loss({m: x[m][idx] for m in self.mods}, {m: aux[m][idx] for m in self.mods})
                opt.zero_grad()
                value.backward()
                opt.step()
                total += value.item() * len(idx)
            self.loss_history.append(total / n)
            bar.advance(task)
        self.net.eval()
