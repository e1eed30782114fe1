"""`duoscan up` / `down` and the embedded services themselves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import redis

from duoscan.core.config import Settings
from duoscan.core.kafka_clients import frame_topics
from duoscan.embedded import EmbeddedRedis
from duoscan.models import resolve_device


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


@pytest.mark.integration  # `duoscan up` starts the broker and Redis in a subprocess
def test_up_then_down(tmp_path):
    env = {**os.environ, "DUOSCAN_STATE_DIR": str(tmp_path / "state")}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "duoscan", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )

    up = run("up", "--lines", "X1,X2")
    assert up.returncode == 0, up.stdout + up.stderr
    state = json.loads((tmp_path / "state" / "services.json").read_text())
    try:
        assert "broker" in up.stdout and state["bootstrap_servers"] in up.stdout
        assert redis.Redis.from_url(state["redis_url"]).ping()
        topics = frame_topics(Settings.load(bootstrap_servers=state["bootstrap_servers"]))
        assert topics == ["frames.X1", "frames.X2"]
        again = run("up")
        assert again.returncode == 2 and again.stderr.startswith("error: already up")  # refuses to start twice
    finally:
        down = run("down")
    assert down.returncode == 0
    assert not (tmp_path / "state" / "services.json").exists()
    deadline = time.monotonic() + 10
    pids = [p["pid"] for p in state["processes"]]
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(pids) == 2 and not any(_alive(p) for p in pids)


def test_redis_with_a_password_needs_it():
    with EmbeddedRedis(password="s3cret") as server:
        assert redis.Redis(port=server.port, password="s3cret").ping()
        try:
            redis.Redis(port=server.port).ping()
        except redis.AuthenticationError:
            pass
        else:
            raise AssertionError("a password-protected Redis answered without the password")


def test_cuda_falls_back_to_cpu_without_a_gpu():
    import torch

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == expected
    assert resolve_device("cuda") == expected
    assert resolve_device("cpu") == "cpu"
