"""`bilm loadtest`: concurrent single-text requests to a Triton server on this machine, from tritonclient's
asyncio clients, bounded in time and requests per level; throughput, latency percentiles and errors per
concurrency, with and without dynamic batching, next to in-process `bilm predict` throughput at the same batch
sizes. Writes JSON and a PNG."""
from __future__ import annotations

import asyncio
import itertools
import json
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.io import write_json
from pipeline.serve.client import loopback_hostport
from pipeline.serve.contract import INPUT, ServeError
from pipeline.serve.server import UNBATCHED_SUFFIX

DEFAULT_TEXTS = Path("artifacts/data/test.jsonl")


@dataclass
class LoadOptions:
    url: str
    model: str
    concurrency: list[int]
    duration: float = 10.0
    warmup: float = 5.0  # seconds of the same load before each level's measured window
    max_requests: int = 100_000
    texts_file: Path | None = None
    unbatched_model: str | None = None
    model_dir: Path | None = None
    threads: int | None = None
    server_pid: int | None = None


def load_texts(path: Path | None) -> list[str]:
    path = Path(path or DEFAULT_TEXTS)
    if not path.is_file():
        raise ServeError(f"no texts at {path}: run `bilm prepare` (it writes {DEFAULT_TEXTS}) or pass --texts FILE")
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = [json.loads(line)["text"] for line in lines] if path.suffix == ".jsonl" else lines
    if not texts:
        raise ServeError(f"{path} holds no texts")
    return texts


def _client(url: str):
    """tritonclient's asyncio client: gRPC for grpc://host:port, else HTTP."""
    hostport = loopback_hostport(url)
    if url.startswith("grpc://"):
        import tritonclient.grpc.aio as module
    else:
        import tritonclient.http.aio as module
    return module, module.InferenceServerClient(hostport)


class ServerProbe:
    """CPU seconds and resident memory of the server process and its children (tritonserver, stubs)."""

    def __init__(self, pid: int | None):
        import psutil

        try:
            self.process = psutil.Process(pid) if pid else None
        except psutil.NoSuchProcess:
            raise ServeError(f"--server-pid {pid}: no such process; pass the pid of the running `bilm serve` "
                             f"(e.g. $! after starting it in the background) or leave the option out") from None

    def _tree(self):
        return [self.process, *self.process.children(recursive=True)] if self.process else []

    def cpu_s(self) -> float:
        return sum(p.cpu_times().user + p.cpu_times().system for p in self._tree())

    def rss_mb(self) -> float | None:
        return sum(p.memory_info().rss for p in self._tree()) / 2 ** 20 if self.process else None


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _worker(client, module, model, texts, deadline, budget, latencies, errors):
    while time.monotonic() < deadline and next(budget, None) is not None:
        item = module.InferInput(INPUT, [1, 1], "BYTES")
        item.set_data_from_numpy(np.array([[next(texts).encode("utf-8")]], dtype=object))
        start = time.perf_counter()
        try:
            await client.infer(model, [item])
            latencies.append((time.perf_counter() - start) * 1e3)
        except Exception as exc:  # noqa: BLE001  InferenceServerException or a transport error: counted
            errors.append(str(exc)[:300])


async def _level(url, model, texts, concurrency, duration, max_requests, probe: ServerProbe,
                 warmup: float = 0.0) -> dict:
    """One concurrency level: `warmup` seconds of the same load, unrecorded (first allocations: ONNX Runtime's
    arena at new shapes, PyTriton's shared memory, connections), then `duration` seconds measured."""
    module, client = _client(url)
    cycle = itertools.cycle(texts)
    if warmup > 0:
        await asyncio.gather(*(_worker(client, module, model, cycle, time.monotonic() + warmup,
                                       iter(range(max_requests)), [], []) for _ in range(concurrency)))
    latencies: list[float] = []
    errors: list[str] = []
    rss: list[tuple[float, float]] = []
    budget = iter(range(max_requests))
    cpu0, server_cpu0, start = _cpu_s(), probe.cpu_s(), time.monotonic()

    async def sample_rss():
        while True:
            value = probe.rss_mb()
            if value is not None:
                rss.append((time.monotonic() - start, value))
            await asyncio.sleep(1.0)

    sampler = asyncio.ensure_future(sample_rss())
    try:
        await asyncio.gather(*(_worker(client, module, model, cycle, start + duration, budget, latencies, errors)
                               for _ in range(concurrency)))
    finally:
        sampler.cancel()
        await client.close()
    wall = time.monotonic() - start
    return _summary(model, concurrency, latencies, errors, wall, _cpu_s() - cpu0, probe.cpu_s() - server_cpu0, rss)


def _summary(model, concurrency, latencies, errors, wall, client_cpu, server_cpu, rss) -> dict:
    ms = np.array(latencies or [np.nan])
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    row = {"model": model, "concurrency": concurrency, "requests": len(latencies) + len(errors),
           "errors": len(errors), "first_error": errors[0] if errors else None, "seconds": round(wall, 3),
           "throughput": len(latencies) / wall, "p50_ms": p50, "p90_ms": p90, "p99_ms": p99,
           "client_cpu_cores": client_cpu / wall, "server_cpu_cores": server_cpu / wall if server_cpu else None}
    if rss:
        first = [v for t, v in rss if t <= 10.0]
        last = [v for t, v in rss if t >= rss[-1][0] - 10.0]
        row.update(rss_first_10s_mb=float(np.mean(first)), rss_last_10s_mb=float(np.mean(last)),
                   rss_growth=float(np.mean(last) / np.mean(first) - 1.0),
                   rss_trace_mb=[[round(t, 1), round(v, 1)] for t, v in rss])  # [seconds, MB], about 1/s
    return row


REFERENCE_BATCH = 16  # in-process batch size each level is compared with (the bar: >= 60% of it)
REFERENCE_SECONDS = 3.0


def open_reference(folder: Path, threads: int | None):
    """`bilm predict`'s predictor for `folder` (ONNX Runtime, `threads` intra-op threads), warmed up."""
    import warnings

    from pipeline.serve.contract import open_predictor, split_threads

    predictor = open_predictor(folder, split_threads(1, threads))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predictor.classify(["warm up"] * 8, batch_size=8)
    return predictor


def predict_throughput(predictor, texts: list[str], batch: int, seconds: float) -> float:
    """Texts/s of `bilm predict --file --batch-size B`'s path: OrtPredictor.classify over blocks of texts, which
    it sorts by length before cutting batches of B (offline, it can; a server sees texts as they come), for
    about `seconds`."""
    import warnings

    block, done, start = max(256, 4 * batch), 0, time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for first in itertools.cycle(range(0, len(texts), block)):
            predictor.classify(texts[first: first + block], batch_size=batch)
            done += len(texts[first: first + block])
            if time.monotonic() - start >= seconds:
                break
    return done / (time.monotonic() - start)


def in_process(predictor, texts: list[str], batch_sizes: list[int], seconds: float) -> dict:
    """Texts/s per batch size, in this process, each measured for about `seconds`."""
    return {str(batch): predict_throughput(predictor, texts, batch, seconds) for batch in batch_sizes}


def _with_reference(row: dict, reference: float | None) -> dict:
    """The level's throughput as a share of in-process batch-16 throughput measured just before it: this
    machine's speed drifts by tens of percent over minutes, so only neighbours in time are compared."""
    if reference:
        row.update(in_process_reference=reference, reference_batch=REFERENCE_BATCH,
                   vs_in_process=row["throughput"] / reference)
    return row


def _served(url: str, model: str) -> bool:
    import tritonclient.http as httpclient

    if url.startswith("grpc://"):
        return True  # checked by the first request instead
    client = httpclient.InferenceServerClient(loopback_hostport(url))
    try:
        return client.is_model_ready(model)
    except Exception:  # noqa: BLE001  unknown model or no server
        return False
    finally:
        client.close()


def run_loadtest(options: LoadOptions, out: Path) -> dict:
    """Every concurrency level against MODEL (and the unbatched twin when served), then in-process throughput;
    writes OUT (JSON) and OUT with .png."""
    loopback_hostport(options.url)  # refuse another host before anything else
    texts = load_texts(options.texts_file)
    if not _served(options.url, options.model):
        raise ServeError(f"model {options.model!r} is not ready at {options.url}; start it with `bilm serve`")
    unbatched = options.unbatched_model or options.model + UNBATCHED_SUFFIX
    models = [options.model] + ([unbatched] if unbatched != "-" and _served(options.url, unbatched) else [])
    probe = ServerProbe(options.server_pid)
    result = {"url": options.url, "model": options.model, "unbatched_model": unbatched if len(models) > 1 else None,
              "duration_s": options.duration, "warmup_s": options.warmup, "n_texts": len(texts)}
    predictor = open_reference(options.model_dir, options.threads) if options.model_dir else None
    if predictor:  # first, while the server is idle
        result["in_process"] = in_process(predictor, texts, options.concurrency, min(options.duration, 10.0))
    result["levels"] = []
    for model, concurrency in itertools.product(models, options.concurrency):
        reference = predict_throughput(predictor, texts, REFERENCE_BATCH, REFERENCE_SECONDS) if predictor else None
        level = asyncio.run(_level(options.url, model, texts, concurrency, options.duration, options.max_requests,
                                   probe, options.warmup))
        result["levels"].append(_with_reference(level, reference))
    write_json(out, result)
    plot(result, out.with_suffix(".png"))
    return result


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for model in dict.fromkeys(row["model"] for row in result["levels"]):
        rows = [r for r in result["levels"] if r["model"] == model]
        xs = [r["concurrency"] for r in rows]
        left.plot(xs, [r["throughput"] for r in rows], marker="o", label=f"served: {model}")
        right.plot(xs, [r["p50_ms"] for r in rows], marker="o", label=f"{model} p50")
        right.plot(xs, [r["p99_ms"] for r in rows], marker="x", linestyle="--", label=f"{model} p99")
    if result.get("in_process"):
        sizes = sorted(int(b) for b in result["in_process"])
        left.plot(sizes, [result["in_process"][str(b)] for b in sizes], marker="s", label="in-process (batch = x)")
    left.set(xscale="log", xlabel="concurrency (in-process: batch size)", ylabel="texts / s", title="throughput")
    right.set(xscale="log", yscale="log", xlabel="concurrency", ylabel="ms", title="latency")
    for ax in (left, right):
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
