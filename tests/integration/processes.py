"""Run medroute's own processes (listener, worker) as real child processes in tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from medroute.config import REPO_ROOT
from medroute.ports import wait_for_port


class ChildProcess:
    """A ``python -m MODULE`` child with its own environment and log file."""

    def __init__(self, module: str, env: dict[str, str], log_path: Path) -> None:
        self.module = module
        self.env = {**os.environ, **env, "PYTHONPATH": str(REPO_ROOT)}
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self, port: int | None = None, timeout: float = 60.0) -> ChildProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        if port is not None:
            wait_for_port(port, timeout, self.process)
        return self

    def kill9(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
