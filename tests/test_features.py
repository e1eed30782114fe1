"""Preprocessing, offline backbones, FPFH, the feature cache and the coreset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from duoscan.models.backbones import BACKBONES, IMAGENET, NORMALISATION, TENSORFLOW, load_backbone
from duoscan.models.components import greedy_coreset
from duoscan.models.features import FeatureCache, FeatureConfig, FeaturePipeline, create_extractor
from duoscan.models.preprocess import PreprocessConfig, prepare, to_frame_resolution
from duoscan.producers.synthetic import render_part


@pytest.fixture(scope="module")
def parts():
    return [render_part("hexnut", np.random.default_rng(i), "good", 72) for i in range(2)]


def test_background_plane_is_removed_and_shapes_follow(parts):
    p = parts[0]
    prep = prepare(p.rgb, p.xyz, PreprocessConfig(resolution=96))
    assert prep.rgb.shape == (96, 96, 3) and prep.xyz.shape == (96, 96, 3)
    assert not prep.valid[:6].any() and not prep.valid[:, :6].any()  # border = background: gone
    assert prep.valid[48, 48 + 25]  # on the nut's body
    assert 0.15 < prep.valid.mean() < 0.6
    wide = prepare(p.rgb[:, :60], p.xyz[:, :60], PreprocessConfig(resolution=64))
    assert wide.pad == (0, 6)  # padded to a square, centred
    back = to_frame_resolution(np.ones((64, 64), np.float32), wide)
    assert back.shape == (72, 60)


@pytest.mark.parametrize(
    "name,channels", [("efficientnet_lite0", 152), ("efficientnet_lite2", 168), ("mobilenet_v2", 128)]
)
def test_rgb_backbones_are_pretrained_and_dense(parts, name, channels):
    net = load_backbone(name)
    bn = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)][3]
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))  # real ImageNet statistics
    prep = [prepare(p.rgb, p.xyz, PreprocessConfig()) for p in parts]
    feats, valid = create_extractor(f"rgb:{name}", FeatureConfig())(prep)
    assert feats.shape == (2, channels, 28, 28) and valid.all()
    assert torch.isfinite(feats).all() and feats.std() > 0


def _real_photographs(size: int = 224) -> torch.Tensor:
    """Three real photographs that ship inside installed packages, centre-cropped, in [0, 1]."""
    from pathlib import Path

    import matplotlib
    import sklearn
    from PIL import Image

    paths = [
        Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg",
        Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg",
        Path(sklearn.__file__).parent / "datasets" / "images" / "flower.jpg",
    ]
    out = []
    for path in paths:
        img = Image.open(path).convert("RGB")
        w, h = img.size
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize(
            (size, size), Image.BICUBIC
        )
        out.append(torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255)
    return torch.stack(out)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite2", "mobilenet_v2"])
def test_each_backbone_declares_the_input_normalisation_its_weights_were_trained_with(name):
    """The first BatchNorm's running statistics were collected on the training inputs: under the right
    normalisation the stem's activations on real photographs have about that variance, under the
    wrong one they are off by a large factor. (Top-1 confidence on single images was too noisy to decide.)"""
    net = load_backbone(name)
    conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    bn = next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    photos = _real_photographs()
    deviation = {}
    for label, (mean, std) in {"imagenet": IMAGENET, "tensorflow": TENSORFLOW}.items():
        with torch.no_grad():
            act = conv((photos - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))
        live = bn.running_var > 1e-3  # dead channels carry no statistics
        deviation[label] = (act.var((0, 2, 3)) / bn.running_var).log().abs()[live].mean().item()
    best = min(deviation, key=deviation.get)
    assert NORMALISATION[name] == {"imagenet": IMAGENET, "tensorflow": TENSORFLOW}[best], deviation
    assert max(deviation.values()) > 2 * min(deviation.values()), deviation  # a clear decision, not a coin toss


def test_user_backbone_file(tmp_path, parts):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3, stride=8, padding=1)).eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    torch.export.save(
        torch.export.export(net, (torch.zeros(2, 3, 64, 64),), dynamic_shapes=({0: batch},)), tmp_path / "mine.pt2"
    )
    prep = [prepare(p.rgb, p.xyz, PreprocessConfig(resolution=64)) for p in parts]
    feats, _ = create_extractor(f"rgb:file:{tmp_path / 'mine.pt2'}", FeatureConfig(grid=8))(prep)
    assert feats.shape == (2, 5, 8, 8)
    with pytest.raises(KeyError, match="unknown backbone"):
        load_backbone("resnet9000")
    assert {"efficientnet_lite0", "efficientnet_lite2", "mobilenet_v2"} <= BACKBONES.keys()


def test_fpfh_is_dense_on_the_part_and_empty_on_background(parts):
    prep = [prepare(p.rgb, p.xyz, PreprocessConfig(resolution=96)) for p in parts]
    feats, valid = create_extractor("xyz:fpfh", FeatureConfig(grid=12))(prep)
    assert feats.shape == (2, 33, 12, 12)
    assert valid[:, 0, 0].sum() == 0 and valid.mean() > 0.1
    inside = feats.permute(0, 2, 3, 1)[valid > 0]
    # open3d's FPFH: three 11-bin histograms, each summing to 200 (SPFH plus weighted neighbours)
    assert torch.allclose(inside.sum(1), torch.full((len(inside),), 600.0), rtol=0.01)
    assert (feats.permute(0, 2, 3, 1)[valid == 0] == 0).all()


def test_feature_cache_serves_the_second_run(tmp_path, parts, monkeypatch):
    pipe = FeaturePipeline(["xyz:fpfh"], PreprocessConfig(resolution=64), FeatureConfig(grid=8), cache_dir=tmp_path)
    _, first = pipe(parts)
    assert len(list(tmp_path.rglob("*.npz"))) == 2
    pipe2 = FeaturePipeline(["xyz:fpfh"], PreprocessConfig(resolution=64), FeatureConfig(grid=8), cache_dir=tmp_path)
    monkeypatch.setattr(pipe2, "extractor", lambda name: (_ for _ in ()).throw(AssertionError("cache missed")))
    _, second = pipe2(parts)
    assert torch.equal(first["xyz:fpfh"][0], second["xyz:fpfh"][0])
    other = FeatureCache.key(parts[0].rgb, parts[0].xyz, {"grid": 9})
    assert other != FeatureCache.key(parts[0].rgb, parts[0].xyz, {"grid": 8})


def test_greedy_coreset_covers_better_than_random():
    g = torch.Generator().manual_seed(0)
    clusters = torch.cat([torch.randn(500, 8, generator=g) * 0.1 + c for c in torch.randn(10, 8, generator=g) * 5])
    idx = greedy_coreset(clusters, 10)
    assert len(set(idx.tolist())) == 10
    radius = torch.cdist(clusters, clusters[idx]).min(1).values.max()
    assert radius < 1.0  # one pick per cluster: every point is near a pick
    assert torch.equal(greedy_coreset(clusters[:5], 10), torch.arange(5))


def test_largest_cluster_filter_drops_stray_points(parts):
    from duoscan.models.preprocess import remove_background

    xyz = parts[0].xyz.copy()
    valid_before = remove_background(xyz, PreprocessConfig())[1]
    xyz[2:5, 2:5, 2] -= 0.01  # a floating speck 10 mm above the plane, far from the part
    cfg = PreprocessConfig(largest_cluster=True)
    _, valid = remove_background(xyz, cfg)
    assert not valid[2:5, 2:5].any()
    assert valid.sum() >= 0.95 * valid_before.sum()
    assert remove_background(xyz, PreprocessConfig())[1][2:5, 2:5].all()  # without the filter it stays


def test_geometry_features_are_unit_free_and_see_dents(parts):
    part = parts[0]
    prep_m = prepare(part.rgb, part.xyz, PreprocessConfig(resolution=96))
    prep_mm = prepare(part.rgb, part.xyz * 1000, PreprocessConfig(resolution=96))  # same part in millimetres
    ext = create_extractor("xyz:geometry", FeatureConfig(grid=12))
    (fm, vm), (fmm, vmm) = ext([prep_m]), ext([prep_mm])
    assert fm.shape == (1, 3, 12, 12) and torch.equal(vm, vmm)
    assert torch.allclose(fm, fmm, atol=1e-3)
    assert (fm.permute(0, 2, 3, 1)[vm == 0] == 0).all()
    dented = render_part("hexnut", np.random.default_rng(0), "dent", 72)
    f_dent, v_dent = ext([prepare(dented.rgb, dented.xyz, PreprocessConfig(resolution=96))])
    assert f_dent.abs().max() > 0


def test_method_specs_parse():
    from duoscan.evaluate import parse_spec

    assert parse_spec("baseline") == ("baseline", None, {})  # no modality given: the caller decides
    assert parse_spec("btf:xyz") == ("btf", "xyz", {})
    assert parse_spec("mafr:both:shots=5:w_census=0") == ("mafr", "both", {"shots": 5, "w_census": 0})
    assert parse_spec("mafr:rgb:xyz_features=fpfh+geometry:normalise=true") == (
        "mafr",
        "rgb",
        {"xyz_features": "fpfh+geometry", "normalise": True},
    )


def test_onnx_backbone_matches_torch_and_is_exported_once(tmp_path):
    from duoscan.models.backbones import load_backbone
    from duoscan.models.runtime import OnnxBackbone, export_onnx, on_runtime, resolve_runtime, set_runtime

    net = load_backbone("mobilenet_v2")
    path = export_onnx(net, "mobilenet_v2", tmp_path)
    stamp = path.stat().st_mtime_ns
    assert export_onnx(net, "mobilenet_v2", tmp_path) == path and path.stat().st_mtime_ns == stamp, (
        "cached, not re-exported"
    )
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        want = net(x)
    got = OnnxBackbone(path)(x)
    assert [t.shape for t in got] == [t.shape for t in want]
    for a, b in zip(want, got, strict=True):
        assert float((a - b).abs().max() / a.abs().max()) < 1e-4
    assert resolve_runtime("cuda", "auto") == "torch" and resolve_runtime("cpu", "torch") == "torch"
    assert isinstance(on_runtime(net, "mobilenet_v2", "cpu", "torch"), torch.nn.Module)
    assert not isinstance(on_runtime(net, "mobilenet_v2", "cpu", "torch"), OnnxBackbone)
    with pytest.raises(ValueError, match="runtime"):
        set_runtime("tensorrt")


@pytest.mark.parametrize("name", ["rgb:efficientnet_lite0", "xyz:visible_depth:efficientnet_lite0", "xyz:fpfh"])
def test_building_an_extractor_leaves_torch_random_stream_alone(name):
    """A network seeded before its backbone is first built (BridgeNet's synthetic anomalies on a warm feature
    cache) trains exactly as one seeded after: building a backbone draws its random init off to the side."""
    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    FeaturePipeline([name], PreprocessConfig(), FeatureConfig()).extractor(name)
    assert torch.equal(torch.rand(4), expected)


def test_resolution_follows_the_frames_and_grid_and_smoothing_follow_it():
    """Left at 0, the resolution is the next of 224/320/448 at or above the frames' side (448 past it), the grid
    its stride-8 side, and a smoothing given at 224 px covers the same share of the frame at any resolution."""
    from duoscan.models import MethodOptionError
    from duoscan.models.feature_method import FeatureOptions, resolution_for

    assert [resolution_for(s) for s in (64, 224, 225, 400, 800)] == [224, 224, 320, 448, 448]
    auto = FeatureOptions()
    assert (auto.resolution, auto.grid) == (0, 0)
    assert (auto.settled(400).resolution, auto.settled(400).grid, auto.settled(400).px(4.0)) == (448, 56, 8.0)
    fixed = FeatureOptions(resolution=112).settled(400)  # an explicit resolution stays; the grid follows it
    assert (fixed.resolution, fixed.grid, fixed.px(4.0)) == (112, 14, 2.0)
    assert FeatureOptions(resolution=224, grid=28).settled(400).grid == 28
    with pytest.raises(MethodOptionError, match="multiple of 8"):
        FeatureOptions(resolution=300)
