"""The command line and the one typed configuration."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from duoscan.cli import app
from duoscan.config import Settings

COMMANDS = ["up", "down", "synth", "train", "evaluate", "benchmark-table", "produce", "work", "alerts", "config", "demo"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output and len(result.output.splitlines()) > 3


def test_env_overrides_defaults_and_secrets_are_masked(monkeypatch):
    monkeypatch.setenv("DUOSCAN_MAX_BATCH", "3")
    monkeypatch.setenv("DUOSCAN_XYZ_FLOAT16", "true")
    monkeypatch.setenv("DUOSCAN_MAX_WAIT_S", "0.2")
    monkeypatch.setenv("DUOSCAN_REDIS_PASSWORD", "hunter2")
    s = Settings.load()
    assert (s.max_batch, s.xyz_float16, s.max_wait_s) == (3, True, 0.2)
    assert Settings.load(max_batch=5).max_batch == 5
    assert s.masked()["redis_password"] == "***"
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 0 and "hunter2" not in result.output
    assert json.loads(result.output)["max_batch"] == 3


def test_settings_survive_the_environment_round_trip():
    s = Settings.load(max_batch=7, xyz_float16=True, topic_prefix="x.frames.", session_timeout_s=2.5)
    env = s.to_env()
    assert Settings.load(**{}) != s
    import os

    old = dict(os.environ)
    try:
        os.environ.update(env)
        assert Settings.load() == s
    finally:
        os.environ.clear()
        os.environ.update(old)


def test_frames_topics_exclude_the_dead_letter_topic():
    s = Settings.load()
    assert s.is_frames_topic("frames.L1")
    assert not s.is_frames_topic(s.dlq_topic) and not s.is_frames_topic("alerts")


def test_synth_and_train_commands(tmp_path):
    runner = CliRunner()
    data, models = tmp_path / "data", tmp_path / "models"
    r = runner.invoke(app, ["synth", "--out", str(data), "--size", "48", "--train", "4", "--validation", "3", "--test-good", "1", "--test-per-defect", "0", "--categories", "ring"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["train", "--data", str(data), "--out", str(models)])
    assert r.exit_code == 0, r.output
    assert (models / "ring.pt").is_file()
