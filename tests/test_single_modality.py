"""Colour-only and 3D-only stations end to end: datasets without xyz/ or rgb/, training with the matching
--modality, replay, and a real worker scoring such a line (or dead-lettering what its model cannot score)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from duoscan.core import kafka_clients
from duoscan.evaluate import train_model
from duoscan.producers.dataset import dataset_inputs, iter_dataset
from duoscan.producers.replay import dataset_frames
from duoscan.producers.sdk import FramePublisher
from duoscan.schemas import DeadLetter
from duoscan.workers.store import ResultStore

from .conftest import cli, process_frames, wait_for_items


def one_input_copy(dataset: Path, out: Path, drop: str, category: str = "ring") -> Path:
    """The category with every ``drop`` folder (rgb or xyz) removed: what a 3D-only or colour-only station records."""
    shutil.copytree(dataset / category, out / category)
    for folder in (out / category).glob(f"*/*/{drop}"):
        shutil.rmtree(folder)
    return out


@pytest.fixture(scope="module")
def rgb_only(dataset, tmp_path_factory) -> Path:
    return one_input_copy(dataset, tmp_path_factory.mktemp("rgb_only"), "xyz")


@pytest.fixture(scope="module")
def xyz_only(dataset, tmp_path_factory) -> Path:
    return one_input_copy(dataset, tmp_path_factory.mktemp("xyz_only"), "rgb")


@pytest.fixture(scope="module")
def trained(rgb_only, xyz_only, tmp_path_factory) -> dict[str, Path]:
    """A colour-only baseline and a 3D-only patchcore, trained through the command line."""
    out = tmp_path_factory.mktemp("single_models")
    models = {"rgb": out / "rgb" / "ring.pt", "xyz": out / "xyz" / "ring.pt"}
    for data, method, modality, path in (
        (rgb_only, "baseline", "rgb", models["rgb"]),
        (xyz_only, "patchcore", "xyz", models["xyz"]),
    ):
        result = cli(
            "train",
            "--data",
            str(data),
            "--category",
            "ring",
            "--method",
            method,
            "--modality",
            modality,
            "--out",
            str(path),
            "--device",
            "cpu",
        )
        assert result.exit_code == 0, result.output[-3000:]
    return models


def test_readers_carry_none_for_the_missing_input(rgb_only, xyz_only):
    assert dataset_inputs(rgb_only, "ring") == ("rgb",) and dataset_inputs(xyz_only, "ring") == ("xyz",)
    colour = list(iter_dataset(rgb_only, "ring", "test"))
    depth = list(iter_dataset(xyz_only, "ring", "test"))
    assert colour and all(s.xyz is None and s.rgb is not None for s in colour)
    assert depth and all(s.rgb is None and s.xyz is not None for s in depth)
    assert [s.mask.sum() for s in colour] == [s.mask.sum() for s in depth], "ground truth is read either way"


def test_trained_single_input_models_evaluate(trained, rgb_only, xyz_only, tmp_path):
    for modality, data in (("rgb", rgb_only), ("xyz", xyz_only)):
        out = tmp_path / f"{modality}.json"
        result = cli(
            "evaluate",
            "--data",
            str(data),
            "--category",
            "ring",
            "--model",
            str(trained[modality]),
            "--json",
            str(out),
            "--device",
            "cpu",
        )
        assert result.exit_code == 0, result.output[-3000:]
        assert "i_auroc" in out.read_text()


@pytest.mark.parametrize(
    "data, method, modality, phrase",
    [
        ("rgb_only", "patchcore", "both", "needs xyz, but"),
        ("rgb_only", "patchcore", "xyz", "use --modality rgb"),
        ("xyz_only", "btf", "both", "needs rgb, but"),
        ("xyz_only", "patchcore", "rgb", "use --modality xyz"),
    ],
)
def test_a_modality_the_data_lacks_is_one_clear_line(request, tmp_path, data, method, modality, phrase):
    root = request.getfixturevalue(data)
    result = cli(
        "train",
        "--data",
        str(root),
        "--category",
        "ring",
        "--method",
        method,
        "--modality",
        modality,
        "--out",
        str(tmp_path / "m.pt"),
    )
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1 and phrase in result.stderr, result.output[
        -2000:
    ]


def test_the_weight_free_baseline_trains_on_empty_clouds(dataset):
    """Every cloud empty (a colour camera only): the baseline fits colour alone and never calls a frame degraded."""
    from duoscan.models import create, with_all_inputs

    frames = [s for s in iter_dataset(dataset, "ring", "train")]
    for f in frames:
        f.xyz = None
    model = create("baseline").fit(with_all_inputs(frames), progress=False)
    out = model.score(with_all_inputs(frames[:3]))
    assert np.isfinite(out.image_scores).all() and out.modalities == [["rgb"]] * 3 and not any(out.degraded)


@pytest.mark.integration
def test_a_colour_only_line_through_a_real_worker(settings, start_worker, trained, rgb_only, xyz_only):
    """Replayed 2D-only frames score on the colour model; 3D-only frames sent to it are dead-lettered with the
    reason."""
    line = "C1"
    kafka_clients.ensure_topics(settings, [line])
    start_worker(settings, models=[trained["rgb"].parent])
    colour = list(dataset_frames(rgb_only, line, "S1", "test"))
    depth = list(dataset_frames(xyz_only, line, "S2", "test"))[:2]
    assert all(f.modalities == ("rgb",) for f in colour) and all(f.modalities == ("xyz",) for f in depth)
    with FramePublisher(settings) as pub:
        for f in colour + depth:
            pub.publish_frame(f)
    store = ResultStore(settings)
    results = wait_for_items(
        lambda: store.read_results([f.frame_id for f in colour]), len(colour), 120, "colour-only results"
    )
    assert {tuple(r.modalities) for r in results.values()} == {("rgb",)} and not any(
        r.degraded for r in results.values()
    )
    letters = wait_for_items(
        lambda: [DeadLetter.decode(v) for v in kafka_clients.read_topic(settings, settings.dlq_topic, 1.0)],
        len(depth),
        60,
        "dead letters",
    )
    assert {d.frame_id for d in letters} == {f.frame_id for f in depth}
    assert all("frame carries no rgb" in d.reason for d in letters)


@pytest.mark.integration
def test_a_3d_only_line_through_a_real_worker(settings, start_worker, trained, xyz_only):
    line = "D1"
    kafka_clients.ensure_topics(settings, [line])
    start_worker(settings, models=[trained["xyz"].parent])
    frames = list(dataset_frames(xyz_only, line, "S1", "test"))[:6]
    with FramePublisher(settings) as pub:
        for f in frames:
            pub.publish_frame(f)
    store = ResultStore(settings)
    results = wait_for_items(
        lambda: store.read_results([f.frame_id for f in frames]), len(frames), 120, "3D-only results"
    )
    assert {tuple(r.modalities) for r in results.values()} == {("xyz",)}
    assert all(np.isfinite(r.score) and r.model == "patchcore" for r in results.values())


@pytest.mark.integration
def test_a_fused_model_scores_a_colour_only_frame_degraded(settings, models_dir, rgb_only):
    frames = list(dataset_frames(rgb_only, "F1", "S1", "test"))[:3]
    report, store = process_frames(settings, models_dir / "ring.pt", frames, "F1")
    results = store.read_results([f.frame_id for f in frames])
    assert report.dead == 0 and len(results) == 3
    assert all(r.degraded and r.modalities == ["rgb"] for r in results.values())


@pytest.mark.integration
def test_fused_models_score_a_3d_only_frame_on_depth_or_dead_letter_it(
    settings, models_dir, dataset, xyz_only, tmp_path, feature_cache
):
    """Late-fusion patchcore and the baseline (a max over modalities) carry on with depth alone, flagged;
    an early-fusion model (btf) cannot, and says so in the dead letter."""
    frames = list(dataset_frames(xyz_only, "F2", "S1", "test"))[:3]
    patchcore = train_model(dataset, "ring", "patchcore", "both", progress=False, cache_dir=feature_cache).save(
        tmp_path / "p" / "ring.pt"
    )
    btf = train_model(dataset, "ring", "btf", "both", progress=False, cache_dir=feature_cache).save(
        tmp_path / "b" / "ring.pt"
    )
    for path, name in ((models_dir / "ring.pt", "baseline"), (patchcore, "patchcore")):
        report, store = process_frames(settings, path, frames, "F" + name)
        results = store.read_results([f.frame_id for f in frames])
        assert report.dead == 0 and len(results) == 3, name
        assert all(r.degraded and r.modalities == ["xyz"] and np.isfinite(r.score) for r in results.values()), name
    report, _ = process_frames(settings, btf, frames, "Fbtf")
    assert report.dead == 3 and report.results == 0
    letters = [DeadLetter.decode(v) for v in kafka_clients.read_topic(settings, settings.dlq_topic, 1.0)]
    assert {d.frame_id for d in letters} == {f.frame_id for f in frames} and all(
        "frame carries no rgb" in d.reason for d in letters
    )


def test_late_fusion_puts_depth_alone_on_the_fused_scale(dataset, feature_cache):
    """A good frame without colour scores like good frames with it (the 3D map times the ratio of medians).
    Geometry features: at the shared fixtures' 64 px FPFH sees no variation between good parts (128 px would)."""
    from duoscan.models import with_all_inputs

    model = train_model(
        dataset, "ring", "patchcore", "both", progress=False, cache_dir=feature_cache, xyz_features="geometry"
    )
    good = [s for s in iter_dataset(dataset, "ring", "test") if s.label == 0]
    full = model.score(good).image_scores
    for s in good:
        s.rgb = None
    alone = model.score(with_all_inputs(good))
    assert alone.modalities == [["xyz"]] * len(good) and all(alone.degraded)
    assert 0.3 < np.median(alone.image_scores) / np.median(full) < 3.0


@pytest.mark.integration
def test_produce_replays_a_colour_only_folder(settings, rgb_only, monkeypatch):
    for key, value in settings.to_env().items():
        monkeypatch.setenv(key, value)
    result = cli("produce", "--source", str(rgb_only), "--line", "P1", "--count", "4", "--fps", "0")
    assert result.exit_code == 0, result.output[-2000:]
    from duoscan.schemas import Frame

    frames = [Frame.decode(v) for v in kafka_clients.read_topic(settings, settings.frames_topic("P1"), 2.0)]
    assert len(frames) == 4 and all(f.modalities == ("rgb",) for f in frames)
