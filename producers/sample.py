"""The frame a dataset reader yields: a published ``Frame`` plus its ground truth. Its own module so that
the MVTec 3D-AD and Eyecandies readers share it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from duoscan.schemas import Frame


@dataclass
class Sample(Frame):
    """A dataset frame with its ground truth: the same type producers publish, plus labels."""

    mask: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), bool))  # H×W bool
    split: str = ""
    defect: str = "good"  # "good" or the defect folder's name
    name: str = ""  # file stem, e.g. "003"

    @property
    def label(self) -> int:
        return int(self.defect != "good")


def make_sample(
    rgb: np.ndarray | None,
    xyz: np.ndarray | None,
    mask: np.ndarray,
    category: str,
    split: str,
    defect: str,
    name: str,
    source: str,
) -> Sample:
    return Sample(
        line="dataset",
        station=split,
        category=category,
        rgb=rgb,
        xyz=xyz,
        frame_id=f"{category}.{split}.{defect}.{name}",
        meta={"defect": defect, "split": split, "name": name, "source": source},
        mask=mask,
        split=split,
        defect=defect,
        name=name,
    )
