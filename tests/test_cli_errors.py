"""The command line's error contract: every user mistake is one line on stderr, exit code 2, no traceback,
and is caught before long work starts. Run in-process through the real entry point (``duoscan.cli.main``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from duoscan.core.config import Settings, mask_url
from duoscan.stack import wait_until
from tests.conftest import cli

NO_BROKER = {"DUOSCAN_BOOTSTRAP_SERVERS": "127.0.0.1:1", "DUOSCAN_REDIS_URL": "redis://127.0.0.1:1/0"}


def bad_inputs(data: Path, model: Path, garbage: Path) -> dict[str, tuple[list[str], dict[str, str], str]]:
    """name -> (arguments, environment, a phrase the one line must contain)."""
    d, m = str(data), str(model)
    return {
        "missing dataset": (["train", "--data", "/nonexistent"], {}, "/nonexistent does not exist"),
        "missing category": (["train", "--data", d, "--category", "nosuch"], {}, "no category 'nosuch'"),
        "unknown method": (
            ["train", "--data", d, "--category", "ring", "--method", "nosuch"],
            {},
            "unknown method 'nosuch'",
        ),
        "misspelt method option": (
            ["train", "--data", d, "--category", "ring", "--method", "mafr:both:w_smoth=0"],
            {},
            "'w_smoth'",
        ),
        "misspelt benchmark option": (
            ["benchmark-table", "--data", d, "--methods", "btf:rgb:sigmma=2"],
            {},
            "'sigmma'",
        ),
        "unknown modality": (
            ["train", "--data", d, "--category", "ring", "--modality", "nosuch"],
            {},
            "--modality 'nosuch'",
        ),
        "unknown device": (["train", "--data", d, "--category", "ring", "--device", "nosuch"], {}, "--device 'nosuch'"),
        "target fpr out of range": (
            ["train", "--data", d, "--category", "ring", "--target-fpr", "5"],
            {},
            "--target-fpr",
        ),
        "missing model file": (
            ["evaluate", "--data", d, "--category", "ring", "--model", "/nonexistent.pt"],
            {},
            "does not exist",
        ),
        "foreign model file": (
            ["evaluate", "--data", d, "--category", "ring", "--model", str(garbage)],
            {},
            "not a duoscan model file",
        ),
        "model of another category": (
            ["evaluate", "--data", d, "--category", "puck", "--model", m],
            {},
            "trained on category 'ring'",
        ),
        "calibrate another category": (
            ["calibrate", "--data", d, "--category", "puck", "--model", m],
            {},
            "trained on category 'ring'",
        ),
        "work without a model": (["work", "--model", "/nonexistent"], {}, "/nonexistent does not exist"),
        "work without a broker": (["work", "--model", m], NO_BROKER, "no Kafka broker answers at 127.0.0.1:1"),
        "produce without a broker": (["produce", "--count", "1"], NO_BROKER, "no Kafka broker answers"),
        "alerts without a broker": (["alerts"], NO_BROKER, "no Kafka broker answers"),
        "topics without a broker": (["topics"], NO_BROKER, "no Kafka broker answers"),
        "produce from a missing folder": (
            ["produce", "--source", "/nonexistent"],
            {},
            "--source /nonexistent is not a folder",
        ),
        "line id with a slash": (["produce", "--line", "bad/line"], {}, "--line 'bad/line'"),
        "negative count": (["produce", "--count", "-1"], {}, "--count"),
        "unknown synth category": (
            ["synth", "--categories", "nosuch", "--out", "/tmp/unused"],
            {},
            "unknown fast categories nosuch",
        ),
        "unknown synth profile": (["synth", "--profile", "nosuch", "--out", "/tmp/unused"], {}, "unknown profile"),
        "unknown command": (["nosuch"], {}, "No such command"),
        "preview of a missing category": (
            ["synth-anomalies", "--data", d, "--category", "nosuch"],
            {},
            "no category 'nosuch'",
        ),
        "port out of range": (["view", "--port", "99999"], {}, "--port"),
        "unknown split": (
            ["calibrate", "--data", d, "--category", "ring", "--model", m, "--split", "nosuch"],
            {},
            "--split 'nosuch'",
        ),
        "bad webhook header": (["alerts", "--header", "no colon"], {}, "is not 'Name: value'"),
        "unknown config action": (["config", "nosuch"], {}, "unknown action"),
        "garbage backbone runtime": (
            ["config", "check"],
            {"DUOSCAN_BACKBONE_RUNTIME": "garbage"},
            "DUOSCAN_BACKBONE_RUNTIME",
        ),
        "zero partitions": (["config", "check"], {"DUOSCAN_PARTITIONS": "0"}, "DUOSCAN_PARTITIONS must be at least 1"),
        "negative batch": (["config", "check"], {"DUOSCAN_MAX_BATCH": "-1"}, "DUOSCAN_MAX_BATCH"),
        "non-numeric batch": (
            ["config", "check"],
            {"DUOSCAN_MAX_BATCH": "abc"},
            "DUOSCAN_MAX_BATCH must be an integer",
        ),
        "negative ttl": (["config", "check"], {"DUOSCAN_RESULT_TTL_S": "-1"}, "DUOSCAN_RESULT_TTL_S"),
        "negative frame limit": (["config", "check"], {"DUOSCAN_MAX_FRAME_BYTES": "-1"}, "DUOSCAN_MAX_FRAME_BYTES"),
        "unknown codec": (["config", "check"], {"DUOSCAN_CODEC": "garbage"}, "DUOSCAN_CODEC must be one of"),
        "bad boolean": (["config", "check"], {"DUOSCAN_XYZ_FLOAT16": "maybe"}, "DUOSCAN_XYZ_FLOAT16"),
        "bad device setting": (["config", "check"], {"DUOSCAN_DEVICE": "nosuch"}, "DUOSCAN_DEVICE"),
    }


@pytest.fixture(scope="module")
def cases(dataset, models_dir, tmp_path_factory):
    garbage = tmp_path_factory.mktemp("bad") / "garbage.pt"
    garbage.write_text("not a model")
    return bad_inputs(dataset, models_dir / "ring.pt", garbage)


CASE_NAMES = list(bad_inputs(Path("d"), Path("m"), Path("g")))


@pytest.mark.parametrize("name", CASE_NAMES)
def test_every_user_error_is_one_line_and_exit_code_2(cases, monkeypatch, name):
    args, env, phrase = cases[name]
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    started = time.monotonic()
    result = cli(*args)
    assert result.exit_code == 2, (result.exit_code, result.output[-2000:])
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    assert phrase in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert time.monotonic() - started < 20, "found before any long work (no client retries, no training)"


def test_the_installed_entry_point_keeps_the_contract_and_debug_shows_the_traceback(tmp_path):
    env = {**os.environ, "DUOSCAN_PARTITIONS": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "duoscan", "config", "check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert (done.returncode, done.stdout, done.stderr) == (
        2,
        "",
        "error: DUOSCAN_PARTITIONS must be at least 1, not 0\n",
    )
    debug = subprocess.run(
        [sys.executable, "-m", "duoscan", "--debug", "config", "check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "ConfigError" in debug.stderr


def test_a_bad_setting_does_not_break_commands_that_do_not_need_it(monkeypatch, tmp_path):
    monkeypatch.setenv("DUOSCAN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("DUOSCAN_BACKBONE_RUNTIME", "garbage")
    result = cli("down")
    assert result.exit_code == 0 and "nothing is up" in result.stdout


def test_down_stops_only_processes_that_are_provably_ours(monkeypatch, tmp_path):
    """A stale state file names PIDs the kernel may have handed to others: `down` must not signal them."""
    from duoscan import services

    monkeypatch.setenv("DUOSCAN_STATE_DIR", str(tmp_path / "state"))
    stranger = subprocess.Popen(["sleep", "300"])
    ours = subprocess.Popen(["sleep", "301"])
    try:
        for p in (stranger, ours):  # recorded before exec, a child would carry pytest's command line
            wait_until(lambda p=p: psutil.Process(p.pid).cmdline()[:1] == ["sleep"], 10, "the child to exec", 0.01)
        services.record("127.0.0.1:1", "redis://127.0.0.1:1/0", [stranger.pid, ours.pid])
        state = json.loads(services.services_file().read_text())
        state["processes"][0]["started"] -= 1000.0  # as if the recorded process had died and its PID been reused
        services.services_file().write_text(json.dumps(state))
        assert services.running(), "one recorded process is still ours"
        result = cli("up")
        assert result.exit_code == 2 and "already up" in result.stderr
        result = cli("down")
        assert result.exit_code == 0 and f"not touched PID {stranger.pid}" in " ".join(result.stdout.split())
        assert ours.wait(10) == -15, "ours got SIGTERM"
        time.sleep(0.2)
        assert stranger.poll() is None, "the stranger was left alone"
        assert not services.services_file().exists()
        services.services_file().parent.mkdir(parents=True, exist_ok=True)
        services.services_file().write_text(
            json.dumps({"bootstrap_servers": "x:1", "redis_url": "redis://x", "pids": [stranger.pid]})
        )
        assert cli("down").exit_code == 0 and stranger.poll() is None, "a record without provenance proves nothing"
    finally:
        for p in (stranger, ours):
            p.kill()
            p.wait()


def test_state_does_not_follow_the_working_directory(monkeypatch, tmp_path):
    from duoscan.core.config import services_file, state_dir

    monkeypatch.delenv("DUOSCAN_STATE_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    assert state_dir() == tmp_path / "xdg" / "duoscan" and services_file().parent == state_dir()
    services_file().parent.mkdir(parents=True)
    services_file().write_text(
        json.dumps({"bootstrap_servers": "10.0.0.9:9092", "redis_url": "redis://10.0.0.9:6379/0", "processes": []})
    )
    elsewhere = tmp_path / "some" / "other" / "folder"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    assert Settings.load().bootstrap_servers == "10.0.0.9:9092"
    from duoscan.cli import DEFAULT_MODELS

    assert not str(DEFAULT_MODELS).startswith("models"), "trained models never land inside the `models` package"


@pytest.mark.parametrize(
    "url, shown",
    [
        ("redis://admin:pw@host:6379/0", "redis://admin:***@host:6379/0"),
        ("redis://:pw@host", "redis://:***@host"),
        ("redis:/admin:pw@host", "redis:***@host"),
        ("admin:pw@host", "admin:***@host"),
        ("redis://host:6379/0", "redis://host:6379/0"),
    ],
)
def test_a_password_in_a_redis_url_is_masked_even_when_the_url_is_malformed(url, shown):
    assert mask_url(url) == shown and "pw" not in mask_url(url)


def test_a_malformed_redis_url_error_does_not_print_the_password(monkeypatch):
    monkeypatch.setenv("DUOSCAN_REDIS_URL", "redis:/admin:s3cret@host")
    result = cli("config", "check")
    assert result.exit_code == 2 and "s3cret" not in result.output and "DUOSCAN_REDIS_URL" in result.stderr


def test_model_file_errors_never_suggest_unsafe_loading(tmp_path):
    import torch

    from duoscan.models import ModelFileError, load_model

    class Boom:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": 1, "payload": Boom()}, evil)
    with pytest.raises(ModelFileError) as info:
        load_model(evil)
    assert "weights_only" not in str(info.value) and "could run code" in str(info.value)


def test_evaluation_without_ground_truth_writes_null_not_nan(dataset, models_dir, tmp_path):
    """A test split without gt/ masks has no pixel metrics; the JSON says null (bare NaN is not JSON)."""
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(dataset / "ring", copy / "ring")
    for gt in (copy / "ring" / "test").glob("*/gt"):
        shutil.rmtree(gt)
    out = tmp_path / "eval.json"
    result = cli(
        "evaluate",
        "--data",
        str(copy),
        "--category",
        "ring",
        "--model",
        str(models_dir / "ring.pt"),
        "--json",
        str(out),
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"bare {c} in the JSON"))
    assert report["aupro_30"] is None and report["p_auroc"] is None and isinstance(report["i_auroc"], float)
    assert "n/a" in result.stdout


def test_settings_and_the_wire_contract_agree_on_codecs():
    from duoscan.core.config import CODECS
    from duoscan.core.config import RUNTIMES as SETTING_RUNTIMES
    from duoscan.models.runtime import RUNTIMES
    from duoscan.schemas import CODECS as WIRE_CODECS

    assert CODECS == WIRE_CODECS and RUNTIMES == SETTING_RUNTIMES


def test_every_setting_has_a_checked_range_or_is_free_text():
    """A new numeric setting must get a lower bound in the one typed config (or this test names it)."""
    from dataclasses import fields

    from duoscan.core.config import _MINIMA

    numeric = {f.name for f in fields(Settings) if str(f.type) in ("int", "float")}
    assert numeric == set(_MINIMA), numeric ^ set(_MINIMA)


def test_a_missing_xyz_file_is_named(dataset, tmp_path):
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(dataset / "ring", copy / "ring")
    victim = sorted((copy / "ring" / "train" / "good" / "xyz").glob("*.tiff"))[0]
    victim.unlink()
    result = cli("train", "--data", str(copy), "--category", "ring", "--out", str(tmp_path / "m.pt"), "--device", "cpu")
    assert result.exit_code == 2 and f"{victim} is missing" in result.stderr and "Traceback" not in result.output


def test_a_port_in_use_is_one_line():
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("view", "--port", str(port))
    assert (
        result.exit_code == 2
        and result.stderr
        == f"error: cannot listen on 127.0.0.1:{port} (Address already in use): pick another --port or --host\n"
    )


@pytest.mark.integration
def test_work_without_redis_is_one_line(settings, models_dir, monkeypatch):
    monkeypatch.setenv("DUOSCAN_BOOTSTRAP_SERVERS", settings.bootstrap_servers)
    monkeypatch.setenv("DUOSCAN_REDIS_URL", "redis://127.0.0.1:1/0")
    started = time.monotonic()
    result = cli("work", "--model", str(models_dir))
    assert result.exit_code == 2 and result.stderr.startswith("error: Redis at redis://127.0.0.1:1/0 is not reachable")
    assert len(result.stderr.splitlines()) == 1 and time.monotonic() - started < 20
