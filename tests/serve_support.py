"""Shared by the serve tests: skip (or fail with BILM_SERVE_REQUIRED=1) without the serve extra; free loopback
ports; a `bilm serve` subprocess that is stopped with SIGTERM."""
from __future__ import annotations

import os
import shutil
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

    def __init__(self, folders: list[Path], *args: str, log: Path, sigint_ignored: bool = False):
        self.http, self.grpc, self.metrics = free_ports(3)
        cmd = [sys.executable, "-m", "pipeline.cli", "serve", *map(str, folders), "--http-port", str(self.http),
               "--grpc-port", str(self.grpc), "--metrics-port", str(self.metrics), *args]
        # the server's workspace goes under TMPDIR: short, for its Unix socket paths (108 bytes at most)
        self.log, self.tmpdir = log, Path(tempfile.mkdtemp(prefix="bs-", dir="/tmp"))
        env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(self.tmpdir)}
        # sigint_ignored: as a shell script's `bilm serve ... &` starts it (background jobs ignore SIGINT)
        ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, preexec_fn=ignore,
                                     stdout=log.open("w"), stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.http}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 90, sig: int = signal.SIGTERM) -> int:
        if self.alive():
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def log_tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:]


def stub_python_env() -> Path:
    """The environment the Python-backend stub runs in: numpy 1 (see pipeline.serve.stubenv)."""
    from pipeline.serve.server import numpy_major
    from pipeline.serve.stubenv import stub_env

    return stub_env() if numpy_major() >= 2 else Path(sys.exec_prefix)


class RepositoryServer(ServerProcess):
    """The `tritonserver` binary that nvidia-pytriton ships, serving a model repository (`--model-repository`),
    as the Triton container would. Its Python backend is assembled as PyTriton does it (the stub for this
    Python version next to libtriton_python.so); the stub finds its environment through PATH and its libpython
    through LD_LIBRARY_PATH."""

    def __init__(self, repo: Path, log: Path):
        import sysconfig

        import pytriton

        dist = Path(pytriton.__file__).parent / "tritonserver"
        self.http, self.grpc, self.metrics = free_ports(3)
        self.log, self.tmpdir = log, Path(tempfile.mkdtemp(prefix="bs-", dir="/tmp"))
        backend = self.tmpdir / "backends" / "python"
        backend.mkdir(parents=True)
        for item in (dist / "backends" / "python").iterdir():
            if item.is_file():
                (backend / item.name).symlink_to(item)
        version = f"{sys.version_info[0]}.{sys.version_info[1]}"
        shutil.copy(dist / "python_backend_stubs" / version / "triton_python_backend_stub", backend)
        libs = [sysconfig.get_config_var("LIBDIR"), str(Path(pytriton.__file__).parents[1] / "nvidia_pytriton.libs")]
        env = {**os.environ, "LD_LIBRARY_PATH": ":".join(libs + [os.environ.get("LD_LIBRARY_PATH", "")]),
               "PATH": f"{stub_python_env() / 'bin'}:{os.environ['PATH']}", "TMPDIR": str(self.tmpdir)}
        cmd = [str(dist / "bin" / "tritonserver"), "--model-repository", str(repo),
               "--backend-directory", str(self.tmpdir / "backends"), "--http-address", "127.0.0.1",
               "--grpc-address", "127.0.0.1", "--metrics-address", "127.0.0.1", "--http-port", str(self.http),
               "--grpc-port", str(self.grpc), "--metrics-port", str(self.metrics), "--exit-timeout-secs", "20"]
        self.proc = subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.http}"


def run_cli_ok(*args: str) -> str:
    """`bilm ARGS` in a subprocess; its stdout, or a failure with its stderr."""
    from conftest import run_cli

    done = run_cli(*args)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout
