"""compose/ cannot run here (no Docker engine), so check that it agrees with the code."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import yaml

from duoscan.config import Settings
from duoscan.kafka_clients import topic_configs

COMPOSE = Path(__file__).resolve().parents[1] / "compose" / "docker-compose.yml"


def load() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_services_and_health():
    services = load()["services"]
    assert {"kafka", "redis", "topics", "worker", "alerts"} <= services.keys()
    assert any(name.startswith("producer") for name in services)
    for name in ("kafka", "redis"):
        assert "healthcheck" in services[name] and services[name]["restart"] == "unless-stopped"
    assert services["worker"]["deploy"]["replicas"] >= 2
    assert "--appendonly" in services["redis"]["command"] and "--requirepass" in services["redis"]["command"]


def test_environment_names_real_settings_and_limits_agree():
    doc = load()
    env = doc["x-duoscan-env"]
    known = {f"DUOSCAN_{f.name.upper()}" for f in fields(Settings)}
    assert set(env) <= known, set(env) - known
    max_frame = int(env["DUOSCAN_MAX_FRAME_BYTES"])
    kafka = doc["services"]["kafka"]["environment"]
    topic_limit = int(topic_configs(Settings.load(max_frame_bytes=max_frame))["max.message.bytes"])
    assert int(kafka["KAFKA_MESSAGE_MAX_BYTES"]) >= topic_limit
    assert int(kafka["KAFKA_REPLICA_FETCH_MAX_BYTES"]) >= topic_limit
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper


def test_commands_exist_in_the_cli():
    from typer.testing import CliRunner

    from duoscan.cli import app

    for name, svc in load()["services"].items():
        cmd = svc.get("command")
        if svc.get("image") == "duoscan:latest" and isinstance(cmd, list) and cmd and not cmd[0].startswith("redis"):
            result = CliRunner().invoke(app, [cmd[0], "--help"])
            assert result.exit_code == 0, f"{name}: {cmd[0]} is not a duoscan command"
