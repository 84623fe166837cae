"""Shared by the serve tests: skip (or fail with BILM_SERVE_REQUIRED=1) without the serve extra; free loopback
ports; a `bilm serve` subprocess that is stopped with SIGTERM."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def serve_extra_missing() -> str | None:
    """Why the serve tests cannot run here, or None."""
    try:
        from pipeline.serve.server import check_environment

        check_environment()
    except Exception as exc:  # noqa: BLE001  ServeError, or an import error of the extra itself
        return str(exc)
    return None


def require_serve_extra() -> None:
    reason = serve_extra_missing()
    if reason is None:
        return
    if os.environ.get("BILM_SERVE_REQUIRED") == "1":
        pytest.fail(f"BILM_SERVE_REQUIRED=1 but: {reason}")
    pytest.skip(reason, allow_module_level=True)


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class ServerProcess:
    """`bilm serve FOLDERS ...` on free loopback ports; `stop()` sends SIGTERM and returns the exit code."""

    def __init__(self, folders: list[Path], *args: str, log: Path):
        self.http, self.grpc, self.metrics = free_ports(3)
        cmd = [sys.executable, "-m", "pipeline.cli", "serve", *map(str, folders), "--http-port", str(self.http),
               "--grpc-port", str(self.grpc), "--metrics-port", str(self.metrics), *args]
        # the server's workspace goes under TMPDIR: short, for its Unix socket paths (108 bytes at most)
        self.log, self.tmpdir = log, Path(tempfile.mkdtemp(prefix="bs-", dir="/tmp"))
        env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(self.tmpdir)}
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env,
                                     stdout=log.open("w"), stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.http}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 90) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def log_tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:]
