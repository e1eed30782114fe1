"""The model alone, timed the same way by every benchmark, and a stream measured between two such timings."""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, NamedTuple, Sequence


class Speed(NamedTuple):
    fps: float
    cpu_ms: float  # CPU time of the whole process (all its threads) per frame: moved less than frames/s by other tenants

    @classmethod
    def median(cls, runs: Sequence["Speed"]) -> "Speed":
        """Each field's median over ``runs`` (passes, or measurements)."""
        return cls(statistics.median(r.fps for r in runs), statistics.median(r.cpu_ms for r in runs))


def timed_passes(model, frames: Sequence, batch: int, repeats: int, device: str = "cpu", ready: Callable[[], object] = lambda: None) -> list[Speed]:
    """``repeats`` passes of ``model.score`` over ``frames`` in batches of ``batch``, after a warm-up batch.

    On one executor thread, as a worker scores: torch's OpenMP pool behaves differently on the main thread
    (batch 1 ran at 8 frames/s there and at 15 on an executor thread here). ``ready`` runs between the warm-up
    and the first timed pass (e.g. a barrier for processes that start timing together).
    """

    def one_pass() -> Speed:
        c0, t0 = time.process_time(), time.perf_counter()
        for i in range(0, len(frames), batch):
            model.score(frames[i : i + batch])
        if device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
        return Speed(len(frames) / (time.perf_counter() - t0), (time.process_time() - c0) / len(frames) * 1000)

    with ThreadPoolExecutor(max_workers=1) as ex:
        ex.submit(model.score, frames[:batch]).result()
        ready()
        return [ex.submit(one_pass).result() for _ in range(repeats)]


def between(model_speed: Callable[[], Speed], stream: Callable[[], dict], before: Speed | None = None) -> tuple[dict, Speed, Speed]:
    """Run ``stream`` between two timings of the model alone (``before``: one taken already, e.g. after the
    previous stream) and add them to its row: this shared machine's speed drifts by 10-20 % over minutes, so a
    stream is compared with the mean of the model runs either side of it. Returns the row and both timings."""
    if before is None:
        before = model_speed()
    row = stream()
    after = model_speed()
    row["model_fps_runs"] = [round(before.fps, 2), round(after.fps, 2)]
    row["model_fps"] = round((before.fps + after.fps) / 2, 2)
    row["ratio"] = round(row["fps"] / row["model_fps"], 3)
    return row, before, after
