"""The operator view: per line and station, the latest verdicts with heatmap overlays, score trends
against the threshold, the alert list and a page per frame. Reads Redis only; never touches Kafka.

A single static page (no build step, nothing fetched from the internet) polls the JSON API below.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import redis
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image

from duoscan.core.config import Settings, mask_url
from duoscan.core.overlay import blend, colormap, render_depth, threshold_scaled
from duoscan.schemas import Result
from duoscan.workers.store import ResultStore, decode_preview

STATIC = Path(__file__).parent / "static"


def _summary(r: Result) -> dict[str, Any]:
    return {
        "frame_id": r.frame_id,
        "line": r.line,
        "station": r.station,
        "category": r.category,
        "score": r.score,
        "threshold": r.threshold,
        "verdict": r.verdict,
        "model": r.model,
        "model_version": r.model_version,
        "degraded": r.degraded,
        "modalities": r.modalities,
        "time_ms": r.timings.written_ns // 1_000_000,
        "latency_ms": round((r.timings.written_ns - r.timings.published_ns) / 1e6, 1)
        if r.timings.published_ns
        else None,
        "region": {"area_px": r.region.area_px, "bbox": list(r.region.bbox)} if r.region else None,
    }


def _png(image: Image.Image) -> Response:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return Response(buf.getvalue(), media_type="image/png", headers={"Cache-Control": "max-age=3600"})


def create_app(settings: Settings) -> FastAPI:
    # No Swagger page: it loads its scripts from a CDN, blank on an offline plant network (/openapi.json stays).
    app = FastAPI(title="duoscan operator view", docs_url=None, redoc_url=None)
    app.state.store = ResultStore(settings)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(router)

    @app.exception_handler(redis.RedisError)
    async def redis_down(_request: Request, exc: redis.RedisError) -> JSONResponse:
        """Redis away: say so (503, the page shows it and keeps polling), not a bare 500."""
        where = mask_url(settings.redis_url)
        detail = f"Redis at {where} is not answering ({type(exc).__name__}); results will show again once it is back"
        return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "2"})

    return app


router = APIRouter()


def _store(request: Request) -> ResultStore:
    return request.app.state.store


Store = Annotated[ResultStore, Depends(_store)]


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    return FileResponse(STATIC / "index.html")


@router.get("/api/lines")
def lines(store: Store, n: int = Query(6, ge=1, le=50)) -> list[dict[str, Any]]:
    """Every line with its stations' latest frames (newest first) and counts over the last entries."""
    return [_line_summary(store, line, n) for line in store.lines()]


def _line_summary(store: ResultStore, line: str, n: int) -> dict[str, Any]:
    recent = store.stream_entries(store.stream_key(line), 200)
    stations = sorted({e.get("station", "") for e in recent})
    latest = store.read_results([e["frame_id"] for e in recent[: n * max(1, len(stations))]])
    by_station = {
        s: [_summary(latest[e["frame_id"]]) for e in recent if e.get("station", "") == s and e["frame_id"] in latest][
            :n
        ]
        for s in stations
    }
    anomalous = sum(e["verdict"] == "anomalous" for e in recent)
    return {"line": line, "stations": by_station, "recent": len(recent), "anomalous": anomalous}


@router.get("/api/lines/{line}/trend")
def trend(store: Store, line: str, n: int = Query(200, ge=1, le=5000)) -> list[dict[str, Any]]:
    """Scores in time order with the threshold that applied to each frame."""
    points = [
        {
            "frame_id": e["frame_id"],
            "station": e.get("station", ""),
            "score": float(e["score"]),
            "threshold": float(e["threshold"]) if "threshold" in e else None,
            "verdict": e["verdict"],
            "time_ms": e["time_ms"],
        }
        for e in store.stream_entries(store.stream_key(line), n)
    ]
    return points[::-1]


@router.get("/api/alerts")
def alerts(
    store: Store,
    line: str = "",
    station: str = "",
    category: str = "",
    n: int = Query(50, ge=1, le=1000),
    since_ms: int = 0,
) -> list[dict[str, Any]]:
    """Anomalous frames, newest first, filtered by line / station / category / time."""
    wanted = {"line": line, "station": station, "category": category}
    out = []
    for e in store.stream_entries(store.anomalies_key, 5000):
        if e["time_ms"] < since_ms or any(v and e[k] != v for k, v in wanted.items()):
            continue
        out.append({**e, "score": float(e["score"]), "threshold": float(e["threshold"])})
        if len(out) >= n:
            break
    return out


@router.get("/api/frames/{frame_id:path}")
def frame(store: Store, frame_id: str) -> dict[str, Any]:
    result = store.read_result(frame_id)
    if result is None:
        raise HTTPException(
            404, f"no result for frame {frame_id} (expired after DUOSCAN_RESULT_TTL_S, or never scored)"
        )
    return _summary(result)


def _preview(store: ResultStore, frame_id: str) -> tuple[bytes, np.ndarray | None]:
    blob = store.client.get(store.preview_key(frame_id))
    if blob is None:
        raise HTTPException(404, f"no preview for frame {frame_id} (DUOSCAN_PREVIEW_PX=0 on the worker, or expired)")
    return decode_preview(blob)


def _result_and_map(store: ResultStore, frame_id: str) -> tuple[Result, np.ndarray]:
    result = store.read_result(frame_id)
    heatmap = store.read_heatmap(result.heatmap_key) if result else None
    if result is None or heatmap is None:
        raise HTTPException(404, f"no heatmap for frame {frame_id}")
    return result, heatmap.astype(np.float32)


@router.get("/img/{frame_id:path}/rgb.jpg", include_in_schema=False)
def rgb(store: Store, frame_id: str) -> Response:
    return Response(_preview(store, frame_id)[0], media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})


@router.get("/img/{frame_id:path}/depth.png", include_in_schema=False)
def depth(store: Store, frame_id: str) -> Response:
    z = _preview(store, frame_id)[1]
    if z is None:
        raise HTTPException(404, "frame had no point cloud")
    return _png(Image.fromarray(render_depth(z)))


@router.get("/img/{frame_id:path}/heatmap.png", include_in_schema=False)
def heatmap(store: Store, frame_id: str) -> Response:
    result, m = _result_and_map(store, frame_id)
    return _png(Image.fromarray(colormap(threshold_scaled(m, result.threshold))))


@router.get("/img/{frame_id:path}/overlay.png", include_in_schema=False)
def overlay(store: Store, frame_id: str) -> Response:
    """The heatmap over the RGB preview, the largest anomalous region outlined."""
    result, m = _result_and_map(store, frame_id)
    picture = np.asarray(Image.open(io.BytesIO(_preview(store, frame_id)[0])).convert("RGB"))
    return _png(blend(picture, m, result.threshold, result.region.bbox if result.region else None))


@router.get("/api/health")
def health(store: Store) -> dict[str, Any]:
    store.client.ping()
    return {"ok": True, "time_ms": int(time.time() * 1000)}
