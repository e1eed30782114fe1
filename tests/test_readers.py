"""Dataset readers: MVTec 3D-AD and Eyecandies fixtures built on the fly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from duoscan.producers.dataset import Sample, categories_in, detect_layout, iter_dataset
from duoscan.producers.eyecandies import FOCAL_LENGTH_PX, depth_to_xyz
from duoscan.schemas import Frame


def write_eyecandies(root: Path, category: str = "Marshmallow", size: int = 24) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", 2), ("val", 2), ("test_public", 3)):
        d = root / category / split / "data"
        d.mkdir(parents=True)
        for i in range(n):
            stem = f"{i:03d}"
            for light in range(6):
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
                    d / f"{stem}_image_{light}.png"
                )
            depth16 = np.full((size, size), 30000, np.uint16)
            depth16[8:16, 8:16] = 20000
            Image.fromarray(depth16).save(d / f"{stem}_depth.png")
            (d / f"{stem}_info_depth.yaml").write_text(yaml.safe_dump({"normalization": {"min": 0.5, "max": 1.5}}))
            np.savetxt(d / f"{stem}_pose.txt", np.eye(4))
            if split == "test_public":
                mask = np.zeros((size, size), np.uint8)
                if i > 0:
                    mask[10:13, 10:13] = 255
                Image.fromarray(mask).save(d / f"{stem}_mask.png")
    return root


def test_eyecandies_layout_becomes_frames(tmp_path):
    root = write_eyecandies(tmp_path)
    assert detect_layout(root, "Marshmallow") == "eyecandies"
    assert categories_in(root) == ["Marshmallow"]
    train = list(iter_dataset(root, "Marshmallow", "train"))
    val = list(iter_dataset(root, "Marshmallow", "validation"))
    test = list(iter_dataset(root, "Marshmallow", "test"))
    assert (len(train), len(val), len(test)) == (2, 2, 3)
    assert [s.defect for s in test] == ["good", "bad", "bad"] and [s.label for s in test] == [0, 1, 1]
    s = test[1]
    assert isinstance(s, Frame) and s.split == "test" and s.mask.sum() == 9
    assert Frame.decode(s.encode()).frame_id == s.frame_id  # replayable into Kafka as is
    # metric depth from the 16-bit PNG and its yaml range, back-projected with focal 711.11
    d_bg = 30000 / 65535 * 1.0 + 0.5
    assert s.xyz[0, 0, 2] == pytest.approx(d_bg, rel=1e-5)
    assert s.xyz[0, 0, 0] == pytest.approx((0 - 12) * d_bg / FOCAL_LENGTH_PX, rel=1e-4)
    assert s.xyz[12, 12, 2] == pytest.approx(20000 / 65535 + 0.5, rel=1e-5)


def test_depth_to_xyz_applies_the_pose():
    depth = np.full((4, 4), 2.0)
    shift = np.eye(4)
    shift[:3, 3] = [0.1, 0.0, 0.0]  # world -> camera translation
    base = depth_to_xyz(depth, np.eye(4))
    moved = depth_to_xyz(depth, shift)
    assert np.allclose(moved[..., 0], base[..., 0] - 0.1, atol=1e-6)
    zero = depth_to_xyz(np.zeros((2, 2)), np.eye(4))
    assert not zero.any()  # no depth, no point


def test_mvtec_reader_yields_frames(dataset):
    s = next(iter_dataset(dataset, "ring", "test"))
    assert isinstance(s, Sample) and isinstance(s, Frame)
    assert s.mask.shape == s.rgb.shape[:2] and s.meta["defect"] == s.defect


def test_unknown_layout_is_a_clear_error(tmp_path):
    (tmp_path / "thing").mkdir()
    with pytest.raises(FileNotFoundError, match="neither MVTec 3D-AD nor Eyecandies"):
        detect_layout(tmp_path, "thing")


def test_datasets_replay_as_frames_of_a_line(tmp_path):
    from duoscan.producers.replay import dataset_frames

    root = write_eyecandies(tmp_path)
    frames = list(dataset_frames(root, "L9", "S2", split="test"))
    assert len(frames) == 3 and type(frames[0]) is Frame
    assert {(f.line, f.station, f.category) for f in frames} == {("L9", "S2", "Marshmallow")}
    assert [f.meta["defect"] for f in frames] == ["good", "bad", "bad"]
    assert Frame.decode(frames[1].encode()).meta["split"] == "test"
