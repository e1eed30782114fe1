"""Which model scores which category: one model file per category in a models directory."""

from __future__ import annotations

import logging
from pathlib import Path

from models import AnomalyModel, load_model, resolve_device

log = logging.getLogger(__name__)


class ModelRouter:
    """Loads each model once and hands it out by the category it was fitted on.

    ``paths`` are model files or folders of them; a model's category is the one stored
    in the file, or else the file's stem (``ring.pt`` scores ``ring``).
    """

    def __init__(self, paths: str | Path | list[str | Path], device: str = "auto") -> None:
        self.device = resolve_device(device)
        self.models: dict[str, AnomalyModel] = {}
        files: list[Path] = []
        for p in [Path(x) for x in (paths if isinstance(paths, list) else [paths])]:
            if p.is_dir():
                files += sorted(p.glob("*.pt"))
            elif p.is_file():
                files.append(p)
            else:
                raise FileNotFoundError(f"model path {p} does not exist (train with `duoscan train`)")
        for path in files:
            m = load_model(path, self.device)
            category = m.category or path.stem
            self.models[category] = m
            log.info("loaded %s v%s for category %s on %s (threshold %.3f)", m.name, m.version, category, self.device, m.threshold)
        if not self.models:
            raise FileNotFoundError(f"no *.pt model files in {', '.join(map(str, paths if isinstance(paths, list) else [paths]))}")

    def get(self, category: str) -> AnomalyModel | None:
        return self.models.get(category)
