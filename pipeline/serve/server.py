"""`bilm serve`: bilm folders on a real Triton Inference Server, started from Python with PyTriton.

Each folder becomes one Triton model (dynamic batching, `--instances` copies, each an inference callable with
its own Predictor and its share of the cores). PyTriton runs `tritonserver` as a child process; Triton's
Python-backend stub forwards every batch to our callables over ZeroMQ and shared memory.

Pitfalls handled here, before the server starts:
- the stub loads `libpython3.X.so` through the loader path: a pyenv/conda/uv interpreter's own LIBDIR goes first
  on LD_LIBRARY_PATH, else the stub loads the system libpython and fails with
  "'_thread.RLock' object has no attribute '_recursion_count'";
- the stub is built against numpy 1 and misreads numpy 2 arrays (BYTES arrive garbled): under numpy 2 it runs
  in a numpy-1 environment of its own (pipeline.serve.stubenv);
- a workspace of its own per server (PYTRITON_HOME, else ~/.cache/pytriton is shared by every server);
- SIGTERM stops like SIGINT (PyTriton handles only KeyboardInterrupt): Triton finishes in-flight requests;
- PyTriton 0.7 puts statistics behind a token: bilm leaves statistics (read-only failure counters) open.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import signal
import sysconfig
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.serve.contract import (DEFAULT_MAX_TEXT_BYTES, INPUT, LABEL, PROBABILITIES, SERVE_INSTALL, ServeError,
                                     classify_request, cpu_count, labels_of, open_predictor,
                                     split_threads)
from pipeline.serve.stubenv import stub_env, stub_env_problem

LOG = logging.getLogger(__name__)
# PyTriton's default token-protected endpoints, minus "statistics": load tests read the failure counters
RESTRICTED_ENDPOINTS = ["shared-memory", "model-repository", "trace", "logging"]
UNBATCHED_SUFFIX = "-unbatched"
STARTS = 3  # attempts, for PyTriton's handshake race (see start)


@dataclass
class ServeOptions:
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    address: str = "127.0.0.1"
    max_batch_size: int = 64
    max_queue_delay_us: int = 2000
    instances: int | None = None  # None: default_instances()
    threads: int | None = None  # total intra-op threads, split over the instances (default: the cores)
    max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES
    with_unbatched: bool = False  # also serve NAME-unbatched with max_batch_size 1, for load-test comparisons
    names: list[str] = field(default_factory=list)


def default_instances() -> int:
    """Two instances where there are two cores or more. PyTriton hands each batch from Triton's Python-backend
    stub to this process and back (ZeroMQ, shared memory); with one instance the model idles during that hop
    (27% of the time at concurrency 16, BERT small, 2 cores), with two, one instance's hop overlaps the other's
    compute: 1.2-1.3x the throughput on this machine, at one intra-op thread each."""
    return 2 if cpu_count() >= 2 else 1


def check_environment() -> None:
    """Fail fast, with the fix, where PyTriton cannot run."""
    try:
        import pytriton  # noqa: F401
        import tritonclient  # noqa: F401
    except ImportError as exc:
        raise ServeError(f"bilm serve needs the serve extra ({exc.name} is missing): {SERVE_INSTALL}") from None
    if numpy_major() >= 2:
        problem = stub_env_problem()
        if problem:
            raise ServeError(problem)


def numpy_major() -> int:
    import numpy as np

    return int(np.__version__.split(".")[0])


def point_stub_at_env() -> None:
    """Under numpy 2, run the Python-backend stub in the numpy-1 environment (see pipeline.serve.stubenv):
    PyTriton puts its `python_env/bin` first on tritonserver's PATH, and the stub's interpreter is found there.
    PyTriton has no option for it, hence the replaced module function (nvidia-pytriton is pinned to 0.7)."""
    if numpy_major() >= 2:
        from pytriton.server import triton_server

        triton_server.get_triton_python_backend_python_env = stub_env


def server_environment(workspace_root: Path) -> None:
    """Set, in this process (PyTriton copies os.environ into tritonserver's), what the server needs."""
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir and any(Path(libdir).glob("libpython3*.so*")):
        current = os.environ.get("LD_LIBRARY_PATH", "")
        if not current.startswith(libdir):
            os.environ["LD_LIBRARY_PATH"] = f"{libdir}:{current}" if current else libdir
    os.environ["PYTRITON_HOME"] = str(workspace_root)


def check_socket_paths(workspace: Path, names: list[str], instances: int) -> None:
    """PyTriton puts Unix sockets (at most 107 bytes a path) in its workspace, named after model and instance."""
    longest = max((str(workspace / f"{n}{UNBATCHED_SUFFIX}_0_{instances - 1}-server.sock") for n in names), key=len)
    if len(longest.encode()) > 107:
        shutil.rmtree(workspace.parent, ignore_errors=True)
        raise ServeError(f"the server's socket path {longest} is longer than the 107 bytes Unix sockets allow; "
                         f"set TMPDIR to a shorter folder (e.g. TMPDIR=/tmp) or shorten --model-name")


def check_ports(options: ServeOptions) -> None:
    """Each port distinct and free on the address, before anything loads: Triton started on a taken port fails
    with an unrelated error (PyTriton then reads the other server's restricted log endpoint: HTTP 403)."""
    import socket

    ports = {"--http-port": options.http_port, "--grpc-port": options.grpc_port,
             "--metrics-port": options.metrics_port}
    if len(set(ports.values())) < len(ports):
        raise ServeError(f"the ports must differ, got {', '.join(f'{k} {v}' for k, v in ports.items())}")
    for flag, port in ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((options.address, port))
            except OSError as exc:
                raise ServeError(f"{options.address}:{port} ({flag}) is not free ({exc.strerror}): another server "
                                 f"is listening there; stop it or pass another {flag}") from None


def model_names(folders: list[Path], names: list[str]) -> list[str]:
    if names and len(names) != len(folders):
        raise ServeError(f"--model-name given {len(names)} time(s) for {len(folders)} folder(s); give one per "
                         f"folder, in order, or none")
    chosen = names or [Path(f).resolve().name for f in folders]
    if len(set(chosen)) != len(chosen):
        raise ServeError(f"two folders would be served under one name ({', '.join(chosen)}); pass --model-name "
                         f"once per folder")
    return chosen


def make_callables(folder: Path, options: ServeOptions) -> tuple[list, list[str]]:
    """One inference callable per instance, each with its own Predictor (sessions are not shared)."""
    from pytriton.decorators import batch

    threads = split_threads(options.instances, options.threads)
    labels = labels_of(folder)
    callables = []
    for _ in range(options.instances):
        # no memory arena: with it, resident memory stepped up 10-45 MB whenever a batch outgrew every earlier
        # one (a long-text group at t = 29 s of a 60 s load): 4-13% growth in a warmed-up minute at concurrency
        # 64; without it 3-5%, at the same throughput (about 450 texts/s, BERT small, 2 cores)
        predictor = open_predictor(folder, threads, arena=False)

        @batch
        def infer(text, predictor=predictor):
            return classify_request(predictor, labels, text, options.max_text_bytes)

        callables.append(infer)
    return callables, labels


def bind_model(triton, name: str, callables: list, labels: list[str], max_batch_size: int, delay_us: int) -> None:
    import numpy as np
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor

    config = ModelConfig(max_batch_size=max_batch_size,
                         batcher=DynamicBatcher(max_queue_delay_microseconds=delay_us))
    triton.bind(model_name=name, infer_func=callables, config=config,
                inputs=[Tensor(name=INPUT, dtype=bytes, shape=(1,))],
                outputs=[Tensor(name=LABEL, dtype=bytes, shape=(1,)),
                         Tensor(name=PROBABILITIES, dtype=np.float32, shape=(len(labels),))])
    publish_labels(triton, name, labels)


def publish_labels(triton, name: str, labels: list[str]) -> None:
    """The label order as model-config parameter `labels` (a JSON list), read by clients from
    GET /v2/models/NAME/config. PyTriton has no public hook for parameters: its config is cached per model."""
    import json

    model = next(m for m in triton._model_manager.models if m.model_name == name)
    model._get_triton_model_config().backend_parameters["labels"] = json.dumps(labels)


def triton_config(options: ServeOptions):
    from pytriton.triton import TritonConfig

    return TritonConfig(http_port=options.http_port, grpc_port=options.grpc_port, metrics_port=options.metrics_port,
                        http_address=options.address, grpc_address=options.address,
                        metrics_address=options.address, exit_timeout_secs=30, log_verbose=0)


def _on_sigterm(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt  # PyTriton's serve() stops the server cleanly on KeyboardInterrupt only


def start(folders: list[Path], options: ServeOptions):
    """(Triton with its models loaded and ready, model names, workspace root); the caller stops it and removes
    the root."""
    check_environment()
    check_ports(options)
    options = dataclasses.replace(options, instances=options.instances or default_instances())
    names = model_names(folders, options.names)
    models = [(name, folder, *make_callables(folder, options)) for name, folder in zip(names, folders)]
    for attempt in range(1, STARTS + 1):
        workspace_root = Path(tempfile.mkdtemp(prefix=f"bilm-serve-{options.http_port}-"))
        check_socket_paths(workspace_root / "workspace", names, options.instances)
        server_environment(workspace_root)
        try:
            return _start_once(models, options, workspace_root), names, workspace_root
        except BaseException as exc:  # retried only for PyTriton's handshake race, re-raised otherwise
            shutil.rmtree(workspace_root, ignore_errors=True)
            if "handshake" not in str(exc) or attempt == STARTS:
                raise
            LOG.warning("a model instance connected to PyTriton's handshake socket before it listened (a race "
                        "under CPU load); starting again (%d of %d)", attempt + 1, STARTS)
    raise AssertionError("unreachable")


def _start_once(models: list, options: ServeOptions, workspace_root: Path):
    from pytriton.triton import Triton, TritonSecurityConfig

    point_stub_at_env()
    triton = Triton(config=triton_config(options), workspace=workspace_root / "workspace",
                    security_config=TritonSecurityConfig(restricted_endpoints=RESTRICTED_ENDPOINTS))
    try:
        for name, folder, callables, labels in models:
            bind_model(triton, name, callables, labels, options.max_batch_size, options.max_queue_delay_us)
            if options.with_unbatched:
                twins, _ = make_callables(folder, options)  # sessions of their own, same instances and threads
                bind_model(triton, name + UNBATCHED_SUFFIX, twins, labels, 1, 0)
        triton.run()
    except BaseException:
        triton.stop()
        raise
    return triton


def serve(folders: list[Path], options: ServeOptions, on_ready=None) -> None:
    """Serve until SIGINT or SIGTERM; Triton then finishes the requests in flight and stops.

    While the server starts, a signal is only noted (raised there, it could land after Triton has started but
    before its handle is returned, leaving it running) and acted on once start() returns. SIGINT is handled
    explicitly: a server that a script starts in the background (`bilm serve ... &`) inherits it ignored."""
    requested: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: requested.append(signum))
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        triton, names, workspace_root = start(folders, options)
        try:
            signal.signal(signal.SIGTERM, _on_sigterm)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            if requested:
                LOG.warning("stop requested while the server was starting: stopping")
                return
            if on_ready:
                on_ready(names)
            triton.serve()  # returns after KeyboardInterrupt (SIGINT, or SIGTERM above), having stopped Triton
        except KeyboardInterrupt:  # a signal just before serve() took over
            pass
        finally:
            triton.stop()
            shutil.rmtree(workspace_root, ignore_errors=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
