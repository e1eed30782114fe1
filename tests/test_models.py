"""The model interface: fit, score, calibrate, safe save/load; the baseline detects defects."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from duoscan.models import REGISTRY, MethodOptionError, ModelFileError, create, load_model
from duoscan.models.components import fit_border_plane, gaussian_blur, height_above_plane, largest_region, valid_mask
from duoscan.models.metrics import image_auroc, pixel_auroc
from duoscan.producers.dataset import iter_samples


def test_baseline_detects_synthetic_defects(dataset, models_dir):
    for cat in ("ring", "puck", "hexnut"):
        model = load_model(models_dir / f"{cat}.pt")
        test = list(iter_samples(dataset, cat, "test"))
        out = model.score(test)
        assert out.image_scores.shape == (len(test),)
        assert all(
            m.shape == s.rgb.shape[:2] and m.dtype == np.float32 for m, s in zip(out.pixel_maps, test, strict=True)
        )
        labels = [s.label for s in test]
        assert image_auroc(labels, out.image_scores) >= 0.8, cat
        assert pixel_auroc([s.mask for s in test], out.pixel_maps) >= 0.8, cat


def test_save_load_round_trip_is_exact(dataset, models_dir, tmp_path):
    model = load_model(models_dir / "ring.pt")
    test = list(iter_samples(dataset, "ring", "test"))[:3]
    again = load_model(model.save(tmp_path / "copy.pt"))
    assert again.threshold == model.threshold and again.version == model.version
    assert np.allclose(again.score(test).image_scores, model.score(test).image_scores)


def test_model_files_never_unpickle_code(models_dir, tmp_path):
    class Boom:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": 1, "method": "baseline", "payload": Boom()}, evil)
    with pytest.raises(ModelFileError, match="not a valid duoscan model file"):
        load_model(evil)
    tampered = tmp_path / "tampered.pt"
    tampered.write_bytes((models_dir / "ring.pt").read_bytes()[:-200])
    with pytest.raises(ModelFileError):
        load_model(tampered)
    with pytest.raises(ModelFileError, match="does not exist"):
        load_model(tmp_path / "missing.pt")


def test_calibration_targets_the_false_positive_rate(dataset):
    model = create("baseline").fit(list(iter_samples(dataset, "puck", "train")), progress=False)
    good = list(iter_samples(dataset, "puck", "validation"))
    scores = model.score(good).image_scores
    thr = model.calibrate(good, target_fpr=0.01)
    assert thr >= np.quantile(scores, 0.99)
    assert model.calibrate(good, target_fpr=0.5) < thr


def test_points_missing_from_the_cloud_leave_colour_scoring(dataset, models_dir):
    model = load_model(models_dir / "ring.pt")
    sample = next(iter_samples(dataset, "ring", "test"))
    sample.xyz = np.zeros_like(sample.xyz)
    out = model.score([sample])
    assert out.modalities == [["rgb"]] and out.degraded == [True] and np.isfinite(out.image_scores).all()


def test_registry_and_unknown_method():
    assert "baseline" in REGISTRY
    with pytest.raises(MethodOptionError, match="unknown method"):
        create("nope")


def test_an_option_the_method_does_not_take_is_an_error_naming_the_known_ones():
    """A typo (w_smoth) once trained the defaults and still labelled the row as an ablation."""
    with pytest.raises(MethodOptionError, match=r"mafr has no option 'w_smoth'; its options are .*w_smooth"):
        create("mafr", w_smoth=0)
    assert create("baseline", modality="rgb", cache_dir=None, device="cpu").name == "baseline", "common options pass"


def test_geometry_helpers():
    yy, xx = np.mgrid[:40, :40] * 0.001
    xyz = np.dstack([xx, yy, 0.3 + 0.02 * xx - 0.01 * yy]).astype(np.float32)
    xyz[15:25, 15:25, 2] -= 0.004  # a 4 mm block towards the camera
    xyz[0, 0] = 0
    assert not valid_mask(xyz)[0, 0]
    a, b, c = fit_border_plane(xyz, valid_mask(xyz))
    assert abs(a - 0.02) < 1e-3 and abs(b + 0.01) < 1e-3 and abs(c - 0.3) < 1e-4
    height, valid = height_above_plane(xyz)
    assert abs(height[20, 20] - 4.0) < 0.05 and abs(height[5, 5]) < 0.05
    assert largest_region(height, 2.0) == (100, (15, 15, 24, 24))
    assert largest_region(height, 10.0) is None
    blurred = gaussian_blur(torch.from_numpy(height)[None], 2.0)[0]
    assert blurred.shape == (40, 40) and blurred.max() < height.max()


def test_the_command_line_and_the_method_names_load_without_torch():
    """`duoscan --help`, `down` or `health` answer at once: the CLI takes the method names from the catalog, and
    the registry (every method module, torch) loads on first use. Kafka and Redis stay out of models: test_layout."""
    code = (
        "import sys, duoscan.cli, duoscan.models; from duoscan.models.catalog import METHODS; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'open3d', 'scipy')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stdout.strip()) == (0, "[]"), proc.stderr[-2000:]


def test_every_registered_method_is_in_the_catalog_and_back():
    from duoscan.models import METHODS, REGISTRY

    assert sorted(REGISTRY) == sorted(METHODS)
