"""`bilm serve`, `bilm loadtest` and `bilm export triton`: click only at import; the library loads inside."""
from __future__ import annotations

from pathlib import Path

import click

from pipeline.cli_base import BilmCommand

from pipeline.errors import exit_on_user_error

folders_argument = click.argument("model_dirs", nargs=-1, required=True,
                                  type=click.Path(exists=True, file_okay=False, path_type=Path))


def _int_list(ctx, param, value: str) -> list[int]:  # noqa: ARG001
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected integers separated by commas, got {value!r}") from None
    if not out or min(out) < 1:
        raise click.BadParameter(f"expected positive integers, got {value!r}")
    return out


@click.command(cls=BilmCommand)
@folders_argument
@click.option("--model-name", "names", multiple=True, help="Triton model name, once per folder (default: folder name).")
@click.option("--http-port", type=int, default=8000, show_default=True)
@click.option("--grpc-port", type=int, default=8001, show_default=True)
@click.option("--metrics-port", type=int, default=8002, show_default=True)
@click.option("--address", default="127.0.0.1", show_default=True,
              help="Interface to listen on; 0.0.0.0 to accept other machines.")
@click.option("--max-batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--max-queue-delay-us", type=click.IntRange(min=0), default=2000, show_default=True,
              help="How long Triton's dynamic batcher waits to fill a batch.")
@click.option("--instances", type=click.IntRange(min=1), default=None,
              help="Model instances; ONNX Runtime's threads are split between them (default: 2 with 2+ cores, "
                   "so that one instance computes while the other's batch is in transit).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Total intra-op threads (default: the cores).")
@click.option("--max-text-bytes", type=click.IntRange(min=1), default=None,
              help="Refuse longer texts (default 65536).")
@click.option("--with-unbatched", is_flag=True,
              help="Also serve each model as NAME-unbatched with max batch size 1 (for bilm loadtest).")
def serve(model_dirs: tuple[Path, ...], names: tuple[str, ...], **kwargs) -> None:
    """Serve MODEL_DIRS (ONNX or TensorRT engine folders) on Triton Inference Server until SIGINT/SIGTERM."""
    from pipeline.serve.contract import DEFAULT_MAX_TEXT_BYTES
    from pipeline.serve.server import ServeOptions, serve as run

    kwargs["max_text_bytes"] = kwargs["max_text_bytes"] or DEFAULT_MAX_TEXT_BYTES
    options = ServeOptions(names=list(names), **kwargs)

    def ready(served: list[str]) -> None:
        click.echo(f"serving {', '.join(served)} on http://{options.address}:{options.http_port} "
                   f"(gRPC {options.grpc_port}, metrics {options.metrics_port}); Ctrl-C or SIGTERM stops", err=True)

    with exit_on_user_error():
        run(list(model_dirs), options, on_ready=ready)


@click.command(cls=BilmCommand, name="triton")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model-name", "names", multiple=True, help="Name prefix, once per folder (default: folder name).")
@click.option("--max-batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--instances", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--kind", type=click.Choice(["auto", "cpu", "gpu"]), default="auto", show_default=True,
              help="instance_group kind of the network (auto: GPU for engines, CPU for ONNX).")
@click.option("--buckets", default="32,64,128,256,512", show_default=True, callback=_int_list,
              help="Sequence lengths the tokenizer pads to (the next one up; texts are cut at the model's max).")
@click.option("--network-backend", type=click.Choice(["native", "python"]), default="native", show_default=True,
              help="native: onnxruntime_onnx / tensorrt_plan; python: a Python-backend model running ONNX "
                   "Runtime (for a tritonserver without the onnxruntime backend).")
def export_triton(paths: tuple[Path, ...], names, max_batch_size, instances, kind, buckets, network_backend) -> None:
    """Write a Triton model repository REPO_DIR (the last path) from MODEL_DIRS (ONNX or engine folders)."""
    from pipeline.serve.repository import RepoOptions, export_repository

    if len(paths) < 2:
        raise click.UsageError("give at least one MODEL_DIR and the REPO_DIR to write")
    options = RepoOptions(max_batch_size=max_batch_size, instances=instances, kind=kind, buckets=buckets,
                          network_backend=network_backend, names=list(names))
    with exit_on_user_error():
        written = export_repository(list(paths[:-1]), paths[-1], options)
    for name in written:
        click.echo(f"{paths[-1]}/{name}")


@click.command(cls=BilmCommand)
@click.argument("url")
@click.argument("model")
@click.option("--concurrency", default="1,4,16,64", show_default=True, callback=_int_list)
@click.option("--duration", type=click.FloatRange(min=0.5), default=10.0, show_default=True,
              help="Seconds per concurrency level.")
@click.option("--warmup", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="Seconds of the same load before each level's measured window (0: none).")
@click.option("--max-requests", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="Upper bound on requests per level.")
@click.option("--texts", "texts_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="JSONL with a \"text\" field, or one text per line (default: artifacts/data/test.jsonl).")
@click.option("--unbatched-model", default=None,
              help="Model to compare without dynamic batching (default: MODEL-unbatched when served; - for none).")
@click.option("--model-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="The folder MODEL serves: in-process bilm predict throughput is measured beside it.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="In-process intra-op threads.")
@click.option("--server-pid", type=int, default=None, help="Server process: its CPU and memory are recorded.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("artifacts/serving/loadtest.json"),
              show_default=True, help="JSON to write; the PNG goes next to it.")
def loadtest(url: str, model: str, concurrency: list[int], duration: float, warmup: float, max_requests: int,
             texts_file: Path | None, unbatched_model: str | None, model_dir: Path | None, threads: int | None,
             server_pid: int | None, out: Path) -> None:
    """Load-test MODEL on the Triton server at URL (loopback only): throughput, latency, errors."""
    from pipeline.serve.loadtest import LoadOptions, run_loadtest

    options = LoadOptions(url=url, model=model, concurrency=concurrency, duration=duration, warmup=warmup,
                          max_requests=max_requests, texts_file=texts_file, unbatched_model=unbatched_model,
                          model_dir=model_dir, threads=threads, server_pid=server_pid)
    with exit_on_user_error():
        result = run_loadtest(options, out)
    for row in result["levels"]:
        versus = (f"  {row['vs_in_process']:.2f}x in-process b{row['reference_batch']}"
                  if "vs_in_process" in row else "")
        click.echo(f"{row['model']:>24} c={row['concurrency']:<3} {row['throughput']:8.1f} req/s  "
                   f"p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms  errors {row['errors']}{versus}")
    click.echo(f"wrote {out} and {out.with_suffix('.png')}")
