"""Which model scores which category: one model file per category in a models directory."""

from __future__ import annotations

import logging
from pathlib import Path

from models import AnomalyModel, load_model, resolve_device

log = logging.getLogger(__name__)


class ModelRouter:
    """Loads ``<models_dir>/<category>.pt`` once per category and hands it out by category."""

    def __init__(self, models_dir: str | Path, device: str = "auto") -> None:
        self.models_dir = Path(models_dir)
        self.device = resolve_device(device)
        self.models: dict[str, AnomalyModel] = {}
        if not self.models_dir.is_dir():
            raise FileNotFoundError(f"models directory {self.models_dir} does not exist (train with `duoscan train`)")
        for path in sorted(self.models_dir.glob("*.pt")):
            self.models[path.stem] = load_model(path, self.device)
            m = self.models[path.stem]
            log.info("loaded %s v%s for category %s on %s (threshold %.3f)", m.name, m.version, path.stem, self.device, m.threshold)
        if not self.models:
            raise FileNotFoundError(f"no *.pt model files in {self.models_dir}")

    def get(self, category: str) -> AnomalyModel | None:
        return self.models.get(category)
