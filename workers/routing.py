"""Which model scores which frame, and swapping in new model versions while the stream runs.

Without a routes file every model file scores the category stored in it (or its stem:
``ring.pt`` scores ``ring``). With one (``routes.toml`` beside the models, or
``DUOSCAN_ROUTES_FILE``), each ``[[route]]`` maps a category, optionally narrowed to a
line and/or station, to a model file and optionally its own threshold; the most specific
match wins::

    [[route]]
    category = "puck"
    model = "puck-cmdr.pt"          # relative to this file

    [[route]]
    line = "L2"
    category = "puck"
    model = "puck-bridgenet.pt"
    threshold = 0.8                 # overrides the threshold stored in the model

Each model file is loaded once however many routes use it. ``refresh`` reloads files whose
size or mtime changed and swaps the whole table in one assignment; a batch reads the table
once, so a new version takes over between batches and no frame is dropped. A file that
fails to load (e.g. half-copied) keeps the old version and is retried on the next refresh.
Write new versions atomically (``duoscan train``/``calibrate`` do: temp file + rename).
"""

from __future__ import annotations

import hashlib
import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path

from duoscan.models import AnomalyModel, ModelFileError, load_model, resolve_device

log = logging.getLogger(__name__)

ROUTE_KEYS = {"line", "station", "category", "model", "threshold"}


@dataclass(frozen=True)
class Route:
    """One model serving frames, with the threshold and version that apply to them."""

    model: AnomalyModel
    threshold: float
    version: str  # the model's own version + a digest of its file: changes with every new file
    path: Path


@dataclass(frozen=True)
class RouteRule:
    category: str
    model_path: Path
    line: str = ""
    station: str = ""
    threshold: float | None = None

    @property
    def specificity(self) -> int:
        return 2 * bool(self.line) + bool(self.station)

    def matches(self, line: str, station: str, category: str) -> bool:
        return category == self.category and self.line in ("", line) and self.station in ("", station)


class RouteTable:
    """An immutable snapshot: rules plus the loaded models they point at."""

    def __init__(self, rules: list[RouteRule], routes: dict[Path, Route]) -> None:
        self.rules = sorted(rules, key=lambda r: -r.specificity)
        self.by_path = routes

    def resolve(self, line: str, station: str, category: str) -> Route | None:
        for rule in self.rules:
            if rule.matches(line, station, category):
                route = self.by_path[rule.model_path]
                return (
                    route if rule.threshold is None else Route(route.model, rule.threshold, route.version, route.path)
                )
        return None

    def versions(self) -> dict[str, str]:
        """``{file name: version}`` of every loaded model, for logs and the worker record."""
        return {p.name: r.version for p, r in sorted(self.by_path.items())}


def read_routes(path: Path) -> list[RouteRule]:
    """Parse a routes file; raise ``ValueError`` naming the file and the route that is wrong."""
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"routes file {path}: {exc}") from None
    rules: list[RouteRule] = []
    seen: dict[tuple[str, str, str], int] = {}
    for i, entry in enumerate(doc.get("route", []), 1):
        unknown = set(entry) - ROUTE_KEYS
        if unknown:
            raise ValueError(
                f"routes file {path}, route {i}: unknown key(s) {', '.join(sorted(unknown))} (known: "
                f"{', '.join(sorted(ROUTE_KEYS))})"
            )
        if not entry.get("category") or not entry.get("model"):
            raise ValueError(f"routes file {path}, route {i}: needs category and model")
        model_path = (path.parent / entry["model"]).resolve()
        if not model_path.is_file():
            raise ValueError(f"routes file {path}, route {i}: model file {model_path} does not exist")
        rule = RouteRule(
            str(entry["category"]),
            model_path,
            str(entry.get("line", "")),
            str(entry.get("station", "")),
            float(entry["threshold"]) if "threshold" in entry else None,
        )
        key = (rule.line, rule.station, rule.category)
        if key in seen:
            raise ValueError(
                f"routes file {path}: routes {seen[key]} and {i} both match line={rule.line or '*'} "
                f"station={rule.station or '*'} category={rule.category}"
            )
        seen[key] = i
        rules.append(rule)
    if not rules:
        raise ValueError(f"routes file {path} has no [[route]] entries")
    return rules


class ModelRouter:
    """Loads each model once, hands out the route for a frame, and picks up new model files."""

    def __init__(
        self, paths: str | Path | list[str | Path], device: str = "auto", routes_file: str | Path | None = None
    ) -> None:
        self.device = resolve_device(device)
        self.sources = [Path(x) for x in (paths if isinstance(paths, list) else [paths])]
        for p in self.sources:
            if not p.exists():
                raise FileNotFoundError(f"model path {p} does not exist (train with `duoscan train`)")
        if routes_file is None:
            found = [d / "routes.toml" for d in self.sources if d.is_dir() and (d / "routes.toml").is_file()]
            routes_file = found[0] if found else None
        self.routes_file = Path(routes_file).resolve() if routes_file else None
        self._stamps: dict[Path, tuple[int, int]] = {}
        self.table = RouteTable([], {})
        self.refresh(strict=True)
        if not self.table.rules:
            raise FileNotFoundError(f"no *.pt model files in {', '.join(map(str, self.sources))}")

    def resolve(self, line: str, station: str, category: str) -> Route | None:
        return self.table.resolve(line, station, category)

    def _model_files(self) -> list[Path]:
        files: list[Path] = []
        for p in self.sources:
            files += sorted(p.glob("*.pt")) if p.is_dir() else [p]
        return [f.resolve() for f in files]

    def refresh(self, strict: bool = False) -> list[str]:
        """Reload what changed on disk; return what was swapped in. ``strict`` raises instead of keeping old
        versions."""
        files = self._model_files()
        watched = files + ([self.routes_file] if self.routes_file else [])
        stamps = {p: _stamp(p) for p in watched if p.exists()}
        if stamps == self._stamps:
            return []
        old, rf = self.table.by_path, self.routes_file
        routes_changed = bool(rf and self.table.rules and stamps.get(rf) != self._stamps.get(rf))
        routes: dict[Path, Route] = {}
        changes: list[str] = []
        for path in files:
            if path in old and stamps.get(path) == self._stamps.get(path):
                routes[path] = old[path]
            elif route := self._load(path, old.get(path), strict):
                routes[path] = route
                changes.append(f"{path.name}: {old[path].version if path in old else 'new'} -> {route.version}")
            else:
                stamps.pop(path, None)  # retried on the next refresh
                if path in old:
                    routes[path] = old[path]
        try:
            rules = self._rules(routes)
        except ValueError:
            if strict:
                raise
            log.exception("keeping the current routes")
            if rf:
                stamps.pop(rf, None)
            rules, routes_changed = self.table.rules, False
            routes = {**old, **routes}
        if routes_changed:
            changes.append(f"routes reloaded from {rf}")
        self.table = RouteTable(rules, routes)  # one assignment: a batch sees the old table or the new
        self._stamps = stamps
        return changes

    def _load(self, path: Path, current: Route | None, strict: bool) -> Route | None:
        """The route for a new or changed model file, or None (logged) if it does not load."""
        try:
            model = load_model(path, self.device)
        except (ModelFileError, OSError) as exc:
            if strict:
                raise
            keeping = f"version {current.version}" if current else "it out of service"
            log.error("cannot load %s (%s); keeping %s", path, exc, keeping)
            return None
        route = Route(model, float(model.threshold), f"{model.version}+{_digest(path)}", path)
        where = f"category {model.category or path.stem} on {self.device}"
        log.info("loaded %s %s for %s (threshold %.3f)", model.name, route.version, where, model.threshold)
        return route

    def _rules(self, routes: dict[Path, Route]) -> list[RouteRule]:
        """The routing rules (the routes file, or one model per category), checked against the loaded models."""
        rules = read_routes(self.routes_file) if self.routes_file else _one_model_per_category(routes)
        if missing := [r.model_path for r in rules if r.model_path not in routes]:
            raise ValueError(f"routes point at model files that did not load: {', '.join(map(str, missing))}")
        foreign = [
            f"{r.model_path.name} (trained on {routes[r.model_path].model.category!r}) for {r.category!r}"
            for r in rules
            if routes[r.model_path].model.category not in ("", r.category)
        ]
        if foreign:  # a model fitted on one part says nothing useful about another
            raise ValueError(f"routes send a category to a model trained on another: {'; '.join(foreign)}")
        return rules


def _one_model_per_category(routes: dict[Path, Route]) -> list[RouteRule]:
    """Without a routes file each file serves its category; two files for one category are ambiguous."""
    by_category: dict[str, Path] = {}
    for path, route in sorted(routes.items()):
        category = route.model.category or path.stem
        if category in by_category:
            raise ValueError(
                f"{by_category[category].name} and {path.name} both serve category {category!r}; "
                f"add a routes.toml beside them saying which scores which line, or move one away"
            )
        by_category[category] = path
    return [RouteRule(c, p) for c, p in by_category.items()]


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return (st.st_mtime_ns, st.st_size)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:10]
