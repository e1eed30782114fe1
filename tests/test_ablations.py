"""Each ablation switch of a method changes what it scores: a switch that silently did nothing would label an
ablation row that measured the default model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from duoscan.evaluate import train_model
from duoscan.models import REGISTRY
from duoscan.producers.dataset import iter_dataset

from .test_registry import TINY

# Each method's ablation switches (the knobs its docs' ablation tables turn), one changed value each, or
# (context, change) for a switch that acts only with another option set. A switch that silently did nothing
# would label an ablation row that measured the default model.
ABLATIONS: dict[str, list[dict | tuple[dict, dict]]] = {
    "mafr": [
        {"combine": "product"},
        {"combine": "sum"},
        {"combine": "max"},
        {"w_census": 0.0},
        ({"xyz_features": "geometry"}, {"w_smooth": 0.0}),  # FPFH is flat on the fixtures: smooth residuals
        {"normalise": True},
        {"denoise": 0.2},
        {"xyz_features": "geometry"},
        {"xyz_error": "znssd"},
        {"rgb_error": "l2"},
    ],
    "cmdr": [
        {"fusion": "both"},
        {"fusion": "map"},
        {"fusion": "rec"},
        ({"fusion": "both"}, {"alpha": 0.0}),
        ({"fusion": "both"}, {"gate": "authors"}),
        {"xyz_distance": "cosine"},
        {"rgb_distance": "l2"},
        {"loss_mask": "own"},
        {"normalise": True},
    ],
    "bridgenet": [
        {"gaussian": False},
        {"texture": False},
        ({"combine": "mean"}, {"share": False}),  # the concatenated fusion has one discriminator: nothing to share
        {"feature_noise": True},
        {"part_only": False},
        {"combine": "max"},
        {"combine": "mean"},
        {"output": "logit"},
        # half the texture anomalies take another good frame's patch, not the fill: draw enough of them
        ({"n_synthetic": 4}, {"fill": "procedural"}),
        ({"n_synthetic": 4}, {"fill": "photo"}),
        ({"epochs": 2}, {"refresh": 0}),  # one epoch draws once either way
    ],
    # FPFH is flat on the 64-px fixtures' smooth parts (the 3D map is zero, so max = sum): fuse geometry maps
    "patchcore": [({"xyz_features": "geometry"}, {"fusion": "max"}), {"xyz_features": "geometry"}],
}


def test_every_switch_has_an_ablation():
    """Every on/off or one-of option of a method is listed above, so a new switch gets tested too."""
    missing = {}
    for name, cls in REGISTRY.items():
        options = getattr(cls, "Options", None)
        if options is None:
            continue
        switches = set(options.CHOICES) - {"modality"}
        switches |= {f.name for f in dataclasses.fields(options) if f.type == "bool"}
        if gap := switches - {k for entry in ABLATIONS.get(name, []) for k in _pair(entry)[1]}:
            missing[name] = sorted(gap)
    assert missing == {}


def _pair(entry: dict | tuple[dict, dict]) -> tuple[dict, dict]:
    return entry if isinstance(entry, tuple) else ({}, entry)


_MAPS: dict[str, list[np.ndarray]] = {}


def _maps(dataset, cache: str, name: str, **options) -> list[np.ndarray]:
    """Maps of 3 test frames from a tiny model trained with ``options`` (each setting trained once)."""
    key = f"{name}{sorted(options.items())}"
    if key not in _MAPS:
        model = train_model(
            dataset, "ring", name, "both", progress=False, cache_dir=cache, shots=6, **{**TINY[name], **options}
        )
        _MAPS[key] = model.score(list(iter_dataset(dataset, "ring", "test"))[:3]).pixel_maps
    return _MAPS[key]


@pytest.mark.parametrize(
    "name,context,change", [(name, *_pair(e)) for name, entries in ABLATIONS.items() for e in entries], ids=str
)
def test_each_ablation_changes_the_maps(dataset, feature_cache, name, context, change):
    default = _maps(dataset, feature_cache, name, **context)
    ablated = _maps(dataset, feature_cache, name, **context, **change)
    differs = max(float(np.abs(a - d).max() / (np.abs(d).max() + 1e-6)) for a, d in zip(ablated, default, strict=True))
    assert differs > 1e-3, f"{name} with {change} scores the same maps as the default"
