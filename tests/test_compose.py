"""compose/ cannot run here (no Docker engine), so check that it agrees with the code."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import fields
from pathlib import Path

import pytest
import typer
import yaml

from duoscan.core.config import Settings
from duoscan.core.kafka_clients import consumer_config, producer_config, topic_configs

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "compose" / "docker-compose.yml"
SETTINGS = {f"DUOSCAN_{f.name.upper()}" for f in fields(Settings) if f.name != "extra"}
ONE_SHOT = {"topics"}


def load() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict[str, dict]:
    return load()["services"]


def substitute(value: str) -> str:
    """``${VAR:-default}`` -> default, ``${VAR:?msg}`` -> a placeholder, as compose would with VAR unset/set."""
    value = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)
    return re.sub(r"\$\{[A-Z_]+:\?[^}]*\}", "placeholder", value)


def duoscan_services() -> dict[str, dict]:
    return {n: s for n, s in services().items() if str(s.get("image", "")).startswith("duoscan:")}


def test_every_service_restarts_and_reports_health():
    svcs = services()
    assert {"kafka", "redis", "topics", "worker", "worker-gpu", "alerts"} <= svcs.keys()
    assert [n for n in svcs if n.startswith("producer-")], "one producer per line"
    for name, svc in svcs.items():
        assert svc.get("restart") in ("unless-stopped", "always", "on-failure"), name
        if name in ONE_SHOT:
            assert svc["restart"] == "on-failure"
            continue
        check = svc.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), f"{name} has no health check"
    redis_cmd = svcs["redis"]["command"]
    assert "--appendonly" in redis_cmd and redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
    assert "--requirepass" in redis_cmd


def test_workers_scale_and_reserve_gpus_with_a_cpu_profile():
    svcs = services()
    cpu, gpu = svcs["worker"], svcs["worker-gpu"]
    assert cpu["deploy"]["replicas"] >= 2 and gpu["deploy"]["replicas"] >= 2
    assert "resources" not in cpu.get("deploy", {}), "CPU workers must start on hosts without GPUs"
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert cpu["profiles"] == ["cpu"] and gpu["profiles"] == ["gpu"]
    env_file = (COMPOSE.parent / ".env").read_text()
    assert "COMPOSE_PROFILES=cpu" in env_file, "plain `docker compose up` starts CPU workers"
    for w in (cpu, gpu):
        assert any(v.endswith(":/models:ro") for v in w["volumes"]), "models come from a volume"
        assert "--device" not in w["command"], "the device comes from DUOSCAN_DEVICE, which --device would override"
        assert substitute(w["environment"]["DUOSCAN_DEVICE"]) == "auto", "a replica takes the GPU it sees, else the CPU"
        assert w["depends_on"]["redis"]["condition"] == "service_healthy"


def test_every_environment_key_is_a_setting_and_the_values_load():
    for name, svc in duoscan_services().items():
        env = {k: substitute(str(v)) for k, v in svc["environment"].items()}
        unknown = set(env) - SETTINGS
        assert not unknown, f"{name}: {unknown} are not duoscan settings"
        saved = {k: os.environ.get(k) for k in env}
        try:
            os.environ.update(env)
            settings = Settings.load().check()  # types parse and the values are usable
        finally:
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        assert settings.redis_password == "placeholder", f"{name}: Redis password must come from REDIS_PASSWORD"
    assert "${REDIS_PASSWORD:?" in COMPOSE.read_text(), "compose refuses to start without a Redis password"


def test_images_are_built_here_from_dockerfiles_that_exist():
    svcs = services()
    built = {}
    for name, svc in svcs.items():
        if "build" in svc:
            dockerfile = (COMPOSE.parent / svc["build"]["context"] / svc["build"]["dockerfile"]).resolve()
            assert dockerfile.is_file(), f"{name}: {dockerfile}"
            built[svc["image"]] = dockerfile
    for name, svc in duoscan_services().items():
        assert svc["image"] in built, f"{name} uses {svc['image']}, which no service builds"
    text = (COMPOSE.parent / "Dockerfile").read_text()
    for src in re.findall(r"^COPY (.+) \S+$", text, re.M):
        for item in src.split():
            assert (ROOT / item).exists(), f"Dockerfile copies {item}, which does not exist"
    assert '"torch==2.13.0"' in text and "TORCH_VARIANT" in text
    assert {svcs["worker-gpu"]["build"]["args"]["TORCH_VARIANT"], svcs["topics"]["build"]["args"]["TORCH_VARIANT"]} == {
        "cu128",
        "cpu",
    }
    for name in ("kafka", "redis"):
        assert re.fullmatch(r"[a-z/]+:\d+(\.\d+)+", svcs[name]["image"]), f"{name}: pin an official image version"


def test_broker_and_topic_limits_fit_the_frames_clients_send():
    doc = load()
    env = doc["x-duoscan-env"]
    settings = Settings.load(
        max_frame_bytes=int(env["DUOSCAN_MAX_FRAME_BYTES"]), frames_retention_ms=int(env["DUOSCAN_FRAMES_RETENTION_MS"])
    )
    kafka = doc["services"]["kafka"]["environment"]
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", "topics come from the bootstrap job"
    frames_cfg = topic_configs(settings, frames=True)
    topic_limit = int(frames_cfg["max.message.bytes"])
    assert topic_limit >= settings.max_frame_bytes
    assert int(kafka["KAFKA_MESSAGE_MAX_BYTES"]) >= topic_limit
    assert int(kafka["KAFKA_REPLICA_FETCH_MAX_BYTES"]) >= topic_limit
    assert int(frames_cfg["retention.ms"]) == 86_400_000
    # what clients built from the same settings send fits the topics, and what they fetch fits a frame
    assert settings.max_frame_bytes < producer_config(settings)["max_request_size"] <= topic_limit
    assert consumer_config(settings)["max_partition_fetch_bytes"] >= topic_limit


def test_commands_parse_in_the_cli():
    """Every duoscan command and health check in compose parses against the real CLI (options included)."""
    import click

    from duoscan.cli import app

    cli = typer.main.get_command(app)
    checked = 0
    for name, svc in duoscan_services().items():
        argvs = [svc["command"]]
        test = svc.get("healthcheck", {}).get("test")
        if test and test[0] == "CMD" and test[1] == "duoscan":
            argvs.append(test[2:])
        for argv in argvs:
            argv = [substitute(a) for a in argv]
            sub = cli.commands.get(argv[0])
            assert sub is not None, f"{name}: {argv[0]} is not a duoscan command"
            try:
                sub.make_context(argv[0], list(argv[1:]), resilient_parsing=False)
            except click.UsageError as exc:
                pytest.fail(f"{name}: `duoscan {' '.join(argv)}` does not parse: {exc}")
            checked += 1
    assert checked >= 8


def _compose_cli() -> bool:
    return (
        shutil.which("docker") is not None
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    )


@pytest.mark.skipif(not _compose_cli(), reason="no docker compose client on this machine")
def test_docker_compose_config_accepts_the_file():
    env = {**os.environ, "REDIS_PASSWORD": "test"}
    for profile in ("cpu", "gpu"):
        out = subprocess.run(
            ["docker", "compose", "-f", str(COMPOSE), "--profile", profile, "config", "-q"],
            env=env,
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr
