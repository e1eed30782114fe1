"""The command line and the one typed configuration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from duoscan.cli import app
from duoscan.core.config import Settings
from tests.conftest import cli

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = [
    "up",
    "down",
    "topics",
    "health",
    "synth",
    "synth-anomalies",
    "train",
    "calibrate",
    "evaluate",
    "benchmark-table",
    "produce",
    "stations",
    "work",
    "alerts",
    "view",
    "config",
    "demo",
]


def test_the_help_check_covers_every_command():
    assert {c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands} == set(COMMANDS)


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
    shown = CliRunner().invoke(app, ["config", "show"])
    assert shown.exit_code == 0 and json.loads(shown.output) == json.loads(result.output)
    monkeypatch.setenv("DUOSCAN_KAFKA_SECURITY_PROTOCOL", "TLS")
    bad = cli("config", "check")
    assert bad.exit_code == 2 and "DUOSCAN_KAFKA_SECURITY_PROTOCOL" in bad.stderr


def test_a_config_file_sits_between_defaults_and_the_environment(monkeypatch, tmp_path):
    path = tmp_path / "duoscan.toml"
    path.write_text('max_batch = 16\nmax_wait_s = 1\ncodec = "lz4"\nxyz_float16 = true\nredis_password = "from-file"\n')
    monkeypatch.setenv("DUOSCAN_CONFIG_FILE", str(path))
    monkeypatch.setenv("DUOSCAN_CODEC", "zstd")
    s = Settings.load()
    assert (s.max_batch, s.max_wait_s, s.xyz_float16, s.codec) == (16, 1.0, True, "zstd"), (
        "file over defaults, env over file"
    )
    assert Settings.load(max_batch=2).max_batch == 2
    shown = CliRunner().invoke(app, ["config", "show"])
    assert shown.exit_code == 0 and "from-file" not in shown.output and str(path) in shown.output.replace("\n", "")
    for body, message in (
        ("max_batchh = 3\n", "unknown setting 'max_batchh'"),
        ('max_batch = "8"\n', "max_batch must be a int"),
        ("xyz_float16 = 1\n", "xyz_float16 must be a bool"),
        ("max_batch = [\n", str(path)),
    ):
        path.write_text(body)
        with pytest.raises(ValueError, match=message):
            Settings.load()
        bad = cli("config", "check")
        assert bad.exit_code == 2 and "DUOSCAN_CONFIG_FILE" in bad.stderr


def test_settings_survive_the_environment_round_trip():
    s = Settings.load(max_batch=7, xyz_float16=True, topic_prefix="x.frames.", session_timeout_s=2.5)
    env = s.to_env()
    assert Settings.load(**{}) != s

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
    r = runner.invoke(
        app,
        [
            "synth",
            "--out",
            str(data),
            "--size",
            "48",
            "--train",
            "4",
            "--validation",
            "3",
            "--test-good",
            "1",
            "--test-per-defect",
            "0",
            "--categories",
            "ring",
        ],
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["train", "--data", str(data), "--out", str(models)])
    assert r.exit_code == 0, r.output
    assert (models / "ring.pt").is_file()


def test_security_settings_reach_every_client_and_stay_masked(tmp_path):
    import ssl

    import faust

    from duoscan.core.security import faust_credentials, kafka_kwargs, redis_kwargs

    ca = tmp_path / "ca.pem"
    ca.write_text("not read until a connection is made")
    s = Settings.load(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="line7",
        kafka_sasl_password="kpass",
        kafka_ssl_cafile=str(ca),
        redis_url="rediss://:upass@redis.plant:6380/0",
        redis_username="worker",
        redis_password="rpass",
        redis_ssl_ca_certs=str(ca),
    )
    k = kafka_kwargs(s)
    assert k["security_protocol"] == "SASL_SSL" and k["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (k["sasl_plain_username"], k["sasl_plain_password"], k["ssl_cafile"]) == ("line7", "kpass", str(ca))
    assert redis_kwargs(s) == {"password": "rpass", "username": "worker", "ssl_ca_certs": str(ca)}
    assert kafka_kwargs(Settings.load()) == {}
    # faust gets the same: SASL over TLS with the mechanism (the system CAs when no CA file is set)
    creds = faust_credentials(s.replace(kafka_ssl_cafile=""))
    assert isinstance(creds, faust.SASLCredentials) and creds.mechanism.value == "SCRAM-SHA-512"
    assert isinstance(creds.ssl_context, ssl.SSLContext) and creds.password == "kpass"
    assert faust_credentials(s.replace(kafka_security_protocol="SASL_PLAINTEXT")).ssl_context is None
    assert faust_credentials(Settings.load()) is None
    shown = json.dumps(s.masked())
    assert not any(secret in shown for secret in ("kpass", "rpass", "upass"))
    assert "rediss://:***@redis.plant:6380/0" in shown


@pytest.mark.parametrize(
    "change, message",
    [
        ({"kafka_security_protocol": "TLS"}, "DUOSCAN_KAFKA_SECURITY_PROTOCOL"),
        (
            {
                "kafka_security_protocol": "SASL_PLAINTEXT",
                "kafka_sasl_mechanism": "GSSAPI",
                "kafka_sasl_username": "u",
                "kafka_sasl_password": "p",
            },
            "DUOSCAN_KAFKA_SASL_MECHANISM",
        ),
        ({"kafka_security_protocol": "SASL_PLAINTEXT"}, "DUOSCAN_KAFKA_SASL_USERNAME"),
        ({"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/no/such/ca.pem"}, "DUOSCAN_KAFKA_SSL_CAFILE"),
        ({"redis_url": "http://redis:6379"}, "DUOSCAN_REDIS_URL"),
        ({"device": "gpu"}, "DUOSCAN_DEVICE"),
    ],
)
def test_unusable_security_settings_name_the_variable(change, message):
    with pytest.raises(ValueError, match=message):
        Settings.load(**change).check()


def test_calibrate_sets_and_stores_the_threshold(dataset, models_dir, tmp_path):
    from duoscan.models import load_model

    base = load_model(models_dir / "ring.pt")
    loose, strict = tmp_path / "loose.pt", tmp_path / "strict.pt"
    for out, fpr in ((loose, "0.5"), (strict, "0.001")):
        result = CliRunner().invoke(
            app,
            [
                "calibrate",
                "--model",
                str(models_dir / "ring.pt"),
                "--data",
                str(dataset),
                "--category",
                "ring",
                "--target-fpr",
                fpr,
                "--out",
                str(out),
            ],
        )
        assert result.exit_code == 0, result.output
    lo, hi = load_model(loose).threshold, load_model(strict).threshold
    assert lo < hi, "a higher tolerated false-positive rate gives a lower threshold"
    assert load_model(models_dir / "ring.pt").threshold == base.threshold, "--out leaves the original alone"
    missing = cli("calibrate", "--model", str(loose), "--data", str(dataset), "--category", "widget")
    assert missing.exit_code == 2 and "widget" in missing.stderr


def test_blas_threads_setting_limits_every_loaded_blas():
    # a fresh process: the limit is process-wide and must reach SciPy's own OpenBLAS as well as NumPy's; set to 1,
    # then to 2 (each setting applied as the CLI applies it)
    code = (
        "import json, os; from duoscan.cli import apply_compute_settings; from duoscan.core.config import Settings; "
        "from threadpoolctl import threadpool_info\n"
        "for n in ('1', '2'):\n"
        "    os.environ['DUOSCAN_BLAS_THREADS'] = n; apply_compute_settings(Settings.load())\n"
        "    blas = [i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas']\n"
        "    print(json.dumps([sorted(set(blas)), len(blas)]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    one, two = (json.loads(line) for line in done.stdout.splitlines())
    assert one[0] == [1] and two[0] == [2] and one[1] >= 2  # NumPy's and SciPy's OpenBLAS both


def test_the_demo_shares_the_cores_among_its_workers(monkeypatch):
    """Each demo worker gets its share of the cores (taking all of them each oversubscribed the demo's two workers
    into seconds of latency), unless the user sets the threads."""
    from duoscan.demo import _worker_env
    from duoscan.stack import threads_per_worker

    cores = len(os.sched_getaffinity(0))
    assert threads_per_worker(1) == cores and threads_per_worker(2 * cores) == 1
    settings = Settings.load(bootstrap_servers="127.0.0.1:1", redis_url="redis://127.0.0.1:2/0")
    monkeypatch.delenv("DUOSCAN_TORCH_THREADS", raising=False)
    env = _worker_env(settings, 2)
    assert env["DUOSCAN_TORCH_THREADS"] == str(max(1, cores // 2)) and env["DUOSCAN_BOOTSTRAP_SERVERS"] == "127.0.0.1:1"
    monkeypatch.setenv("DUOSCAN_TORCH_THREADS", "3")
    assert _worker_env(settings, 2)["DUOSCAN_TORCH_THREADS"] == "3"


def test_stage_threads_carry_their_name_for_the_os():
    from duoscan.models.parallel import name_os_thread, os_thread_named

    def comm() -> str:
        return Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip()

    if not Path("/proc/self/task").is_dir():
        pytest.skip("no /proc here")
    seen: list[str] = []

    def stage() -> None:
        name_os_thread("decode")
        seen.append(comm())
        with os_thread_named("onnx"):
            seen.append(comm())
            child = threading.Thread(target=lambda: seen.append(comm()))  # native threads inherit the name
            child.start()
            child.join()
        seen.append(comm())

    t = threading.Thread(target=stage)
    t.start()
    t.join()
    assert seen == ["decode", "onnx", "onnx", "decode"]


@pytest.mark.integration
@pytest.mark.parametrize(
    "env, flag, expected", [(None, [], "auto"), ("cpu", [], "cpu"), ("cpu", ["--device", "cuda"], "cuda")]
)
def test_the_worker_scores_on_the_configured_device(monkeypatch, settings, tmp_path, env, flag, expected):
    """``duoscan work`` takes DUOSCAN_DEVICE unless --device says otherwise (it once always passed "auto",
    so a GPU worker benchmarked "on CPU" scored on the GPU)."""
    from duoscan.workers import app as worker_app

    seen: list = []
    monkeypatch.setattr(worker_app, "run_worker", lambda settings, models, loglevel: seen.append(settings))
    if env is None:
        monkeypatch.delenv("DUOSCAN_DEVICE", raising=False)
    else:
        monkeypatch.setenv("DUOSCAN_DEVICE", env)
    monkeypatch.setenv("DUOSCAN_BOOTSTRAP_SERVERS", settings.bootstrap_servers)  # the worker checks both answer first
    monkeypatch.setenv("DUOSCAN_REDIS_URL", settings.redis_url)
    model = tmp_path / "m.pt"
    model.write_bytes(b"")
    result = cli("work", "--model", str(model), *flag)
    assert result.exit_code == 0, result.output
    assert [s.device for s in seen] == [expected]
    monkeypatch.setenv("DUOSCAN_DEVICE", "gpu")
    bad = cli("work", "--model", str(model))
    assert bad.exit_code == 2 and "DUOSCAN_DEVICE" in bad.stderr
