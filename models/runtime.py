"""Where a backbone runs: eager torch, or onnxruntime on CPU (5-7x faster here for these CNNs).

``auto`` (the default) picks onnxruntime for CPU backbones when it is installed and torch on
CUDA. The ONNX file is exported once from the same weights and cached by a hash of them, so
nothing is downloaded and every process after the first just loads it. Outputs match eager
torch to ~1e-6 relative error (tested).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .parallel import os_thread_named

log = logging.getLogger(__name__)
RUNTIMES = ("auto", "torch", "onnx")
_runtime = os.environ.get("DUOSCAN_BACKBONE_RUNTIME", "auto")
_cache_dir = Path(os.environ.get("DUOSCAN_ONNX_CACHE_DIR") or Path.home() / ".cache" / "duoscan" / "onnx")


def set_runtime(runtime: str, cache_dir: str | Path | None = None) -> None:
    """Choose the backbone runtime for backbones loaded from now on (the worker and CLI call this
    from ``Settings``)."""
    global _runtime, _cache_dir
    if runtime not in RUNTIMES:
        raise ValueError(f"backbone runtime must be one of {RUNTIMES}, not {runtime!r}")
    _runtime = runtime
    if cache_dir:
        _cache_dir = Path(cache_dir)


def onnx_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_runtime(device: str, runtime: str | None = None) -> str:
    runtime = runtime or _runtime
    if runtime == "auto":
        return "onnx" if device == "cpu" and onnx_available() else "torch"
    if runtime == "onnx" and device != "cpu":
        log.warning("onnx backbone runtime is CPU-only here; using torch on %s", device)
        return "torch"
    return runtime


class OnnxBackbone(nn.Module):
    """Runs an exported backbone with onnxruntime; returns the same list of maps as the torch module."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.add_session_config_entry(
            "session.intra_op.allow_spinning", "0"
        )  # polite when other processes share the cores
        with os_thread_named("onnx"):  # its intra-op threads start here and keep the name: their CPU time shows apart
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.path = path

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = self.session.run(None, {self.input: np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)})
        return [torch.from_numpy(o) for o in outs]


def weights_hash(net: nn.Module) -> str:
    h = hashlib.sha256(torch.__version__.encode())
    for name, t in net.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def export_onnx(net: nn.Module, name: str, cache_dir: Path | None = None) -> Path:
    """Export ``net`` (B×3×H×W -> list of maps) once; later calls return the cached file."""
    cache = cache_dir or _cache_dir
    path = cache / f"{name.replace(':', '_').replace('/', '_')}-{weights_hash(net)}.onnx"
    if path.is_file():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    net = net.eval()
    with torch.no_grad():
        n_out = len(net(torch.zeros(1, 3, 64, 64)))
    outputs = [f"map{i}" for i in range(n_out)]
    axes = {
        "image": {0: "batch", 2: "height", 3: "width"},
        **{o: {0: "batch", 2: f"h{i}", 3: f"w{i}"} for i, o in enumerate(outputs)},
    }
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=cache)  # atomic: workers may export at the same time
    os.close(fd)
    try:
        with warnings.catch_warnings():  # the TorchScript exporter is chatty about dynamic shapes
            warnings.simplefilter("ignore")
            torch.onnx.export(
                net,
                (torch.zeros(1, 3, 224, 224),),
                tmp,
                input_names=["image"],
                output_names=outputs,
                dynamic_axes=axes,
                opset_version=17,
                dynamo=False,
            )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("exported backbone %s to %s", name, path)
    return path


def on_runtime(net: nn.Module, name: str, device: str, runtime: str | None = None) -> nn.Module:
    """``net`` on ``device`` as the chosen runtime runs it."""
    if resolve_runtime(device, runtime) == "onnx":
        try:
            return OnnxBackbone(export_onnx(net, name))
        except Exception as exc:  # noqa: BLE001 - an export problem must not stop scoring
            log.warning("onnxruntime unavailable for %s (%s); using torch", name, exc)
    return net.to(device)
