"""Operator view in real headless Chromium, Prometheus metrics, and alert forwarding to an MES."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jsonschema
import pytest

from duoscan.core import kafka_clients
from duoscan.embedded import free_port
from duoscan.producers.replay import synthetic_frames
from duoscan.producers.sdk import FramePublisher
from duoscan.schemas import Alert, Region
from duoscan.workers.forward import JsonLines, Webhook, forward_alerts
from duoscan.workers.store import ResultStore

from .conftest import process_frames, wait_until

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("DUOSCAN_TEST_ARTIFACTS", ROOT / "out" / "test-artifacts"))
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")

pytestmark = pytest.mark.integration


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def total(metrics: dict[str, float], name: str) -> float:
    return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))


def ring_frames(line: str, n: int, seed: int, defect_rate: float = 0.5) -> list:
    return list(
        itertools.islice(
            (
                f
                for f in synthetic_frames(line, "S1", categories=("ring",), seed=seed, defect_rate=defect_rate, size=64)
            ),
            n,
        )
    )


def test_worker_metrics_move_when_frames_flow(settings, start_worker):
    port = free_port()
    settings = settings.replace(metrics_port=port, metrics_addr="127.0.0.1")
    kafka_clients.ensure_topics(settings, ["M"])
    start_worker(settings)
    before = wait_until(lambda: _try_scrape(port), 90, "the worker's /metrics endpoint")
    assert total(before, "duoscan_frames_consumed_total") == 0
    assert total(before, "duoscan_model_loaded") >= 3, "loaded model versions are exported"
    frames = ring_frames("M", 12, seed=3)
    with FramePublisher(settings) as pub:
        for f in frames:
            pub.publish_frame(f)
    after = wait_until(
        lambda: (m := _try_scrape(port)) and total(m, "duoscan_results_total") >= len(frames) and m,
        90,
        "counters to move",
    )
    assert total(after, "duoscan_frames_consumed_total") == len(frames)
    assert after["duoscan_batch_size_count"] >= 1 and after["duoscan_batch_size_sum"] == len(frames)
    assert after["duoscan_scoring_seconds_count"] == after["duoscan_batch_size_count"]
    assert after['duoscan_end_to_end_latency_seconds_count{line="M"}'] == len(frames)
    anomalous = after.get('duoscan_results_total{line="M",verdict="anomalous"}', 0)
    assert after["duoscan_alerts_total"] == anomalous
    assert any(k.startswith("duoscan_consumer_lag{partition=") for k in after), "lag is reported per partition"


def _try_scrape(port: int) -> dict[str, float] | None:
    try:
        return scrape(port)
    except OSError:
        return None


def test_producer_metrics_count_published_frames(settings):
    from prometheus_client import REGISTRY

    def published() -> float:
        return REGISTRY.get_sample_value("duoscan_frames_published_total", {"line": "PM"}) or 0.0

    start = published()
    with FramePublisher(settings) as pub:
        for f in ring_frames("PM", 5, seed=4):
            pub.publish_frame(f)
    assert published() - start == 5
    assert (REGISTRY.get_sample_value("duoscan_published_bytes_total", {"line": "PM"}) or 0) > 5 * 1000


class Receiver:
    """A local MES endpoint: answers 500 to the first ``fail`` POSTs, then 200; records what it accepted."""

    def __init__(self, fail: int) -> None:
        self.fail, self.requests, self.accepted, self.keys = fail, 0, [], []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests += 1
                if outer.requests <= outer.fail:
                    self.send_response(500)
                else:
                    outer.accepted.append(json.loads(body))
                    outer.keys.append(self.headers["Idempotency-Key"])
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/mes/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def publish_alerts(settings, n: int) -> list[Alert]:
    kafka_clients.ensure_topics(settings, [])
    alerts = [
        Alert(
            frame_id=f"F{i:03d}",
            line="L1",
            station="S1",
            category="ring",
            score=2.0 + i,
            threshold=1.0,
            heatmap_key=f"k{i}",
            region=Region(12, (1, 2, 5, 6)) if i % 2 else None,
            model="cmdr",
            model_version="1+abc",
        )
        for i in range(n)
    ]
    producer = kafka_clients.producer(settings)
    for a in alerts:
        producer.send(settings.alerts_topic, key=a.frame_id.encode(), value=a.encode())
    producer.flush()
    producer.close()
    return alerts


def test_webhook_gets_every_alert_once_and_retries_500s(settings, tmp_path):
    alerts = publish_alerts(settings, 6)
    receiver = Receiver(fail=3)
    hook = Webhook(receiver.url, headers={"Authorization": "Bearer t"}, backoff_s=0.05, max_backoff_s=0.2)
    jsonl = tmp_path / "alerts.jsonl"
    n = forward_alerts(settings, [hook, JsonLines(str(jsonl))], group="mes-test", follow=False, idle_timeout_s=3)
    assert n == len(alerts)
    assert receiver.requests == len(alerts) + 3, "the three 500s were retried"
    assert [a["frame_id"] for a in receiver.accepted] == [a.frame_id for a in alerts], (
        "each alert delivered once, in order"
    )
    assert receiver.keys == [a.frame_id for a in alerts], "frame id as idempotency key"
    schema = json.loads((ROOT / "schemas" / "alert.schema.json").read_text())
    lines = jsonl.read_text().splitlines()
    assert len(lines) == len(alerts)
    for body in receiver.accepted + [json.loads(x) for x in lines]:
        jsonschema.validate(body, schema)  # the documented schema is what goes out
    # offsets were committed: the same group starts after them
    again = forward_alerts(
        settings, [JsonLines(str(tmp_path / "again.jsonl"))], group="mes-test", follow=False, idle_timeout_s=3
    )
    assert again == 0
    publish_alerts(settings, 1)
    assert forward_alerts(settings, [hook], group="mes-test", follow=False, idle_timeout_s=3) == 1


def test_webhook_does_not_retry_a_rejection_forever():
    receiver = Receiver(fail=0)
    receiver.server.RequestHandlerClass.do_POST = lambda h: (
        h.rfile.read(int(h.headers["Content-Length"])),
        h.send_response(400),
        h.end_headers(),
    )
    hook = Webhook(receiver.url, backoff_s=0.01)
    hook.send(
        Alert(
            frame_id="X",
            line="L",
            station="S",
            category="c",
            score=1.0,
            threshold=0.5,
            heatmap_key="k",
            region=None,
            model="m",
            model_version="1",
        )
    )
    assert hook.rejected == 1


def test_alerts_cli_forwards_to_a_file(settings, tmp_path):
    publish_alerts(settings, 3)
    out = tmp_path / "cli.jsonl"
    env = {**os.environ, **settings.to_env()}
    done = subprocess.run(
        [sys.executable, "-m", "duoscan", "alerts", "--no-follow", "--group", "cli-test", "--out", str(out)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert [json.loads(x)["frame_id"] for x in out.read_text().splitlines()] == ["F000", "F001", "F002"]


# --- the operator view in a real browser -------------------------------------------------------


@contextlib.contextmanager
def view_process(env: dict[str, str], log_path: Path, ready: str = "/api/health"):
    """A real `duoscan view` process on a free port; yields its URL once ``ready`` answers."""
    port = free_port()
    with open(log_path, "wb") as log:
        argv = [sys.executable, "-m", "duoscan", "view", "--port", str(port)]
        proc = subprocess.Popen(argv, env={**os.environ, **env}, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: _get(url + ready), 60, "the view server")
            yield url
        finally:
            proc.terminate()
            proc.wait(10)


@pytest.fixture
def view_server(settings, tmp_path):
    with view_process(settings.to_env(), tmp_path / "view.log") as url:
        yield url


def _get(url: str) -> bytes | None:
    try:
        return urllib.request.urlopen(url, timeout=5).read()
    except OSError:
        return None


@pytest.fixture
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("Debian's chromium and chromium-driver are not installed (make test installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
    ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def wait_js(driver, script: str, timeout: float, what: str):
    return wait_until(lambda: driver.execute_script(script), timeout, what)


def test_operator_view_in_chromium(settings, models_dir, view_server, browser):
    frames = ring_frames("V", 10, seed=21, defect_rate=0.6)
    _, store = process_frames(settings, models_dir / "ring.pt", frames, "V")
    results = store.read_results([f.frame_id for f in frames])
    alerted = [r for r in results.values() if r.anomalous]
    assert alerted, "the fixture needs at least one anomalous frame"

    browser.get(view_server + "/")
    wait_js(
        browser,
        "return document.querySelector('.line-card[data-line=\"V\"] img.overlay') !== null",
        30,
        "line V with frames",
    )
    assert "line V" in browser.find_element("css selector", '.line-card[data-line="V"] h2').text
    wait_js(
        browser,
        "return [...document.querySelectorAll('img.overlay')].every(i => i.complete && i.naturalWidth > 0)",
        30,
        "overlays loaded",
    )
    assert int(
        browser.find_element("css selector", '.line-card[data-line="V"] svg.trend').get_attribute("data-points")
    ) == len(frames)
    browser.save_screenshot(str(ARTIFACTS / "view-lines.png"))

    target = alerted[0]
    browser.get(f"{view_server}/#/frame/{target.frame_id}")
    wait_js(
        browser,
        f"const d = document.getElementById('frame-detail'); return d && d.dataset.frame === '{target.frame_id}'",
        30,
        "the frame page",
    )
    wait_js(
        browser,
        "return ['heatmap','overlay','rgb','depth'].every(id => { const i = document.getElementById(id); return i "
        "&& i.complete && i.naturalWidth > 0; })",
        30,
        "the frame's images",
    )
    assert "anomalous" in browser.find_element("css selector", "#frame-detail h2").text
    browser.save_screenshot(str(ARTIFACTS / "view-frame.png"))

    browser.get(f"{view_server}/#/alerts?line=V")
    rows = wait_js(
        browser,
        "const r = document.querySelectorAll('#alerts tr[data-frame]'); return r.length ? [...r].map(x => "
        "x.dataset.frame) : null",
        30,
        "alert rows",
    )
    assert set(rows) == {r.frame_id for r in alerted}
    browser.save_screenshot(str(ARTIFACTS / "view-alerts.png"))
    browser.find_element("css selector", f'#alerts tr[data-frame="{target.frame_id}"]').click()
    wait_js(
        browser,
        f"const d = document.getElementById('frame-detail'); return d && d.dataset.frame === '{target.frame_id}'",
        30,
        "a click on an alert row to open its frame",
    )

    browser.get(view_server + "/")
    wait_js(browser, "return document.querySelector('.line-card[data-line=\"V\"]') !== null", 30, "the lines page")
    new = ring_frames("V", 1, seed=99)[0]
    process_frames(settings, models_dir / "ring.pt", [new], "V", partition=1)
    wait_js(
        browser,
        f"return document.querySelector('[data-frame=\"{new.frame_id}\"]') !== null",
        15,
        "the page to show the new result without a reload",
    )
    browser.save_screenshot(str(ARTIFACTS / "view-updated.png"))
    assert (
        int(browser.find_element("css selector", '.line-card[data-line="V"] svg.trend').get_attribute("data-points"))
        == len(frames) + 1
    )

    browser.get(view_server + "/#/frame/%E0%A4%A")  # a malformed address says so and the page keeps polling
    wait_js(
        browser,
        "return document.getElementById('status').textContent.includes('malformed')",
        15,
        "the malformed-address message",
    )
    browser.execute_script("location.hash = '#/'")
    wait_js(
        browser,
        "return document.getElementById('status').textContent.startsWith('updated')",
        15,
        "refreshing again after a bad address",
    )


def test_view_api_says_what_is_missing(settings, view_server):
    try:
        urllib.request.urlopen(view_server + "/api/frames/nope", timeout=5)
    except urllib.error.HTTPError as exc:
        assert exc.code == 404 and "no result for frame nope" in exc.read().decode()
    else:
        pytest.fail("expected 404")
    assert re.search(rb"<title>duoscan", _get(view_server + "/"))


def test_frame_ids_with_slashes_are_viewable(settings, models_dir, view_server):
    frame = ring_frames("W", 1, seed=5)[0]
    frame.frame_id = "L1/S1/000123"
    process_frames(settings, models_dir / "ring.pt", [frame], "W")
    quoted = urllib.parse.quote(frame.frame_id, safe="")
    summary = json.loads(_get(f"{view_server}/api/frames/{quoted}"))
    assert summary["frame_id"] == frame.frame_id and summary["line"] == "W"
    for image in ("overlay.png", "heatmap.png", "rgb.jpg", "depth.png"):
        assert _get(f"{view_server}/img/{quoted}/{image}"), image
    assert _get(view_server + "/api/docs") is None, "no page that needs a CDN"


def test_view_says_503_when_redis_is_away(tmp_path):
    dead = free_port()
    with view_process({"DUOSCAN_REDIS_URL": f"redis://127.0.0.1:{dead}/0"}, tmp_path / "view.log", ready="/") as url:
        for route in ("/api/lines", "/api/health", "/api/alerts", "/api/frames/x"):
            try:
                urllib.request.urlopen(url + route, timeout=10)
            except urllib.error.HTTPError as exc:
                assert exc.code == 503, route
                assert f"127.0.0.1:{dead}" in json.loads(exc.read())["detail"]
            else:
                pytest.fail(f"{route} answered without Redis")


def test_hostile_text_in_redis_is_shown_not_run(settings, view_server, browser):
    """Anyone who can write Redis could plant markup in a result: the page escapes every field it inserts."""
    import numpy as np

    from duoscan.schemas import Result, Timings
    from duoscan.workers.store import encode_heatmap

    store = ResultStore(settings)
    evil = '"><img src=x id=pwned onerror="document.title=1">'
    r = Result(
        frame_id="evil-1",
        line="H",
        station="S1",
        category="ring",
        model="m",
        model_version="1",
        score=1.0,
        threshold=0.5,
        verdict=evil,
        heatmap_key=store.heatmap_key("evil-1"),
        modalities=["rgb"],
        region=None,
        timings=Timings(1, 1, 1, 1, 1),
    )
    store.write([r], [encode_heatmap(np.zeros((8, 8), np.float32))])
    browser.get(f"{view_server}/#/frame/evil-1")
    wait_js(
        browser,
        "const d = document.getElementById('frame-detail'); return d && d.dataset.frame === 'evil-1'",
        30,
        "the frame page",
    )
    assert browser.execute_script("return document.getElementById('pwned') === null && document.title !== '1'")
    assert evil in browser.find_element("css selector", "#frame-detail h2").text
