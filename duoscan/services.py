"""The record of what `duoscan up` started, so `duoscan down` stops exactly those processes.

A PID alone is not proof: after a reboot or a crash the state file outlives its processes and the
kernel hands their PIDs to others. Each entry therefore keeps the command line and start time the
process had at `up`; `down` signals only a live process whose both still match.
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import asdict, dataclass

import psutil

from .core.config import ConfigError, services_file


@dataclass(frozen=True)
class ServiceProcess:
    pid: int
    cmdline: list[str]
    started: float  # psutil create_time(), seconds since the epoch

    @classmethod
    def of(cls, pid: int) -> ServiceProcess:
        proc = psutil.Process(pid)
        return cls(pid, proc.cmdline(), proc.create_time())

    def is_ours(self) -> bool:
        """Still the very process `up` started (same PID, command line and start time)."""
        try:
            proc = psutil.Process(self.pid)
            return proc.cmdline() == self.cmdline and abs(proc.create_time() - self.started) < 0.01
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return False


def record(bootstrap_servers: str, redis_url: str, pids: list[int]) -> None:
    path = services_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "bootstrap_servers": bootstrap_servers,
        "redis_url": redis_url,
        "processes": [asdict(ServiceProcess.of(p)) for p in pids],
    }
    path.write_text(json.dumps(state, indent=2))


def recorded() -> list[ServiceProcess] | None:
    """The processes the state file names (None: no state file). A file from before provenance was
    recorded (bare ``pids``) names no process that can be proven ours."""
    path = services_file()
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text())
        return [
            ServiceProcess(int(p["pid"]), list(p["cmdline"]), float(p["started"])) for p in state.get("processes", [])
        ]
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"{path} is not a state file duoscan wrote: delete it, then run `duoscan up`") from None


def running(procs: list[ServiceProcess] | None = None) -> bool:
    """Whether a previous `up` still has a live process of its own (``procs``: what :func:`recorded` returned,
    when the caller has read the state file already)."""
    procs = recorded() if procs is None else procs
    return any(p.is_ours() for p in procs or [])


def stop() -> tuple[list[int], list[int]]:
    """SIGTERM each recorded process that is provably ours; forget the record. Returns (stopped, skipped) PIDs."""
    stopped, skipped = [], []
    for proc in recorded() or []:
        if proc.is_ours():
            try:
                os.kill(proc.pid, signal.SIGTERM)
                stopped.append(proc.pid)
            except ProcessLookupError:
                pass
        else:
            skipped.append(proc.pid)
    services_file().unlink(missing_ok=True)
    return stopped, skipped
