"""The model alone, timed the same way by every benchmark, and a stream measured between two such timings."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple


class Speed(NamedTuple):
    fps: float
    cpu_ms: (
        float  # CPU time of the whole process (all its threads) per frame: moved less than frames/s by other tenants
    )
    steal_pct: float = float("nan")  # the host's CPU time taken by other guests meanwhile (see host_cpu)
    backbone_cpu_ms: float = float("nan")  # the part of cpu_ms spent in the pretrained networks' passes

    @classmethod
    def median(cls, runs: Sequence[Speed]) -> Speed:
        """Each field's median over ``runs`` (passes, or measurements)."""
        return cls(*(statistics.median(r[i] for r in runs) for i in range(len(cls._fields))))


def host_cpu() -> tuple[int, int]:
    """(steal, total) CPU time of the whole host so far, in clock ticks, from Linux's ``/proc/stat``; (0, 0) elsewhere.

    On a virtual machine "steal" is time the hypervisor ran other guests while ours wanted the CPU (vmstat
    showed 1-38 % during one model run here), so benchmarks report it next to each timing. It is not the only
    thing that moves this host's speed: rounds 20 % apart have shown 0 % steal."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    except (OSError, ValueError):
        return 0, 0
    return ticks[7], sum(ticks)


def steal_pct(since: tuple[int, int]) -> float:
    """Steal as a percentage of all the host's CPU time since ``since`` (a :func:`host_cpu` reading); NaN without
    data."""
    steal, total = host_cpu()
    return round(100 * (steal - since[0]) / (total - since[1]), 1) if total > since[1] else float("nan")


class BackboneMeter:
    """Counts the process CPU time spent inside the pretrained networks a model's feature pipeline runs (the
    RGB backbone, and the same backbone on visible-depth images): what "the backbone's own cost" means when a
    method's whole cost per frame is compared with it. Methods without a feature pipeline read NaN."""

    def __init__(self, model) -> None:
        self.cpu_s, self.metered = 0.0, False
        for extractor in getattr(getattr(model, "pipeline", None), "_extractors", {}).values():
            if hasattr(extractor, "net"):
                extractor.net = self._metered(extractor.net)
                self.metered = True

    def _metered(self, net: Callable) -> Callable:
        def run(*args, **kwargs):
            c0 = time.process_time()
            try:
                return net(*args, **kwargs)
            finally:
                self.cpu_s += time.process_time() - c0

        return run

    def read(self) -> float:
        return self.cpu_s if self.metered else float("nan")


def timed_passes(
    model, frames: Sequence, batch: int, repeats: int, device: str = "cpu", ready: Callable[[], object] = lambda: None
) -> list[Speed]:
    """``repeats`` passes of ``model.score`` over ``frames`` in batches of ``batch``, after a warm-up batch.

    On one executor thread, as a worker scores: torch's OpenMP pool behaves differently on the main thread
    (batch 1 ran at 8 frames/s there and at 15 on an executor thread here). ``ready`` runs between the warm-up
    and the first timed pass (e.g. a barrier for processes that start timing together).
    """

    meter: BackboneMeter | None = None

    def one_pass() -> Speed:
        c0, t0, h0, b0 = time.process_time(), time.perf_counter(), host_cpu(), meter.read()
        for i in range(0, len(frames), batch):
            model.score(frames[i : i + batch])
        if device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
        per_frame = lambda seconds: seconds / len(frames) * 1000  # noqa: E731
        return Speed(
            len(frames) / (time.perf_counter() - t0),
            per_frame(time.process_time() - c0),
            steal_pct(h0),
            per_frame(meter.read() - b0),
        )

    with ThreadPoolExecutor(max_workers=1) as ex:
        ex.submit(model.score, frames[:batch]).result()
        meter = BackboneMeter(model)  # after the warm-up batch, which built the extractors
        ready()
        return [ex.submit(one_pass).result() for _ in range(repeats)]


def between(
    model_speed: Callable[[], Speed], stream: Callable[[], dict], before: Speed | None = None
) -> tuple[dict, Speed, Speed]:
    """Run ``stream`` between two timings of the model alone (``before``: one taken already, e.g. after the
    previous stream) and add them to its row: this shared machine's speed drifts by 10-20 % over minutes, so a
    stream is compared with the mean of the model runs either side of it. Returns the row and both timings."""
    if before is None:
        before = model_speed()
    row = stream()
    after = model_speed()
    row["model_fps_runs"] = [round(before.fps, 2), round(after.fps, 2)]
    row["model_fps"] = round((before.fps + after.fps) / 2, 2)
    row["model_steal_pct"] = [before.steal_pct, after.steal_pct]
    row["ratio"] = round(row["fps"] / row["model_fps"], 3)
    return row, before, after
