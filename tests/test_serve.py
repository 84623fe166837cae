"""`bilm serve` on a real tritonserver (PyTriton), loopback only: the contract, parity with `bilm predict`, bad
requests, the SIGTERM stop; and the pieces that need no server (length groups, text checks, the leaf rule)."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from export_fixtures import build_onnx_dir, review_texts
from serve_support import REPO, ServerProcess, require_serve_extra

from pipeline.serve.contract import BadRequest, decode_texts, length_groups


# --- no server ------------------------------------------------------------------------------------------------
def test_length_groups_pad_each_group_to_its_own_longest():
    lengths = [5, 80, 6, 70, 7, 200]
    groups = length_groups(lengths, max_ratio=1.5)
    assert groups == [[0, 2, 4], [3, 1], [5]]
    for group in groups:  # no text padded beyond 1.5x its own length
        assert max(lengths[i] for i in group) <= 1.5 * min(lengths[i] for i in group)


@pytest.mark.parametrize("raw, problem", [
    (np.zeros((0, 1), dtype=object), "empty batch"),
    (np.array([[b"fine"], [b"\xff\xfe bad"]], dtype=object), "text 1 is not valid UTF-8"),
    (np.array([[b"x" * 2_000_000]], dtype=object), "over this server's limit"),
    (np.array([[b"   "]], dtype=object), "text 0 is empty"),
])
def test_decode_texts_names_the_problem(raw, problem):
    with pytest.raises(BadRequest, match=problem):
        decode_texts(raw, max_bytes=65536)


def test_decode_keeps_trailing_nul_bytes():
    assert decode_texts(np.array([[b"ok\x00"]], dtype=object), 100) == ["ok\x00"]


def test_a_taken_or_repeated_port_is_refused_before_anything_starts():
    """Triton on a taken port fails with an unrelated HTTP 403 from the other server: bilm names the port."""
    import socket

    from pipeline.serve.contract import ServeError
    from pipeline.serve.server import ServeOptions, check_ports
    from serve_support import free_ports

    http, grpc, metrics = free_ports(3)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", grpc))
        taken.listen()
        with pytest.raises(ServeError, match=f"127.0.0.1:{grpc} \\(--grpc-port\\) is not free"):
            check_ports(ServeOptions(http_port=http, grpc_port=grpc, metrics_port=metrics))
    with pytest.raises(ServeError, match="ports must differ"):
        check_ports(ServeOptions(http_port=http, grpc_port=http, metrics_port=metrics))
    check_ports(ServeOptions(http_port=http, grpc_port=grpc, metrics_port=metrics))  # all free: no error


def test_a_missing_stub_environment_names_the_command_that_makes_it(tmp_path):
    from pipeline.serve.stubenv import stub_env_problem

    assert "python -m pipeline.serve.stubenv" in stub_env_problem(tmp_path / "none")


def test_serving_path_is_a_leaf():
    """pipeline.serve imports pipeline.runtime, never export/ or training code, torch or transformers."""
    modules = sorted(f"pipeline.serve.{p.stem}" for p in (REPO / "pipeline" / "serve").glob("*.py"))
    code = (f"import sys, {', '.join(modules)}; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pipeline', 'torch', 'transformers')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout.replace("'", '"'))
    assert "pipeline.runtime" in loaded
    heavy = ("torch", "transformers", "pipeline.export", "pipeline.training", "pipeline.pretrain", "pipeline.finetune",
             "pipeline.cli", "pipeline.families", "pipeline.data", "pipeline.evaluate")
    forbidden = [m for m in loaded if any(m == h or m.startswith(h + ".") for h in heavy)]
    assert forbidden == []


# --- a real server ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_serve_extra()
    from pipeline.serve.client import http_client, wait_ready

    folders = [build_onnx_dir("bert", tmp_path_factory), build_onnx_dir("xlnet", tmp_path_factory)]
    proc = ServerProcess(folders, "--model-name", "bert", "--model-name", "xlnet", "--max-batch-size", "8", "--max-text-bytes", "100000", "--instances", "2",
                         log=tmp_path_factory.mktemp("serve") / "serve.log")
    try:
        client = http_client(proc.url)
        proc.ready_s = wait_ready(client, ["bert", "xlnet"], timeout_s=180, alive=proc.alive)
    except Exception as exc:
        proc.stop()
        raise RuntimeError(f"server did not start ({exc}):\n{proc.log_tail()}") from None
    proc.client, proc.folders = client, dict(zip(["bert", "xlnet"], folders))
    yield proc
    if proc.alive():
        proc.stop()
    shutil.rmtree(proc.tmpdir, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bert", "xlnet"])
def test_served_model_matches_bilm_predict(server, name):
    """Same labels as the in-process predictor and probabilities within 1e-5, on texts of mixed lengths batched
    together (XLNet pads on the left: a right-padded batch would change its predictions)."""
    from pipeline.runtime import OrtPredictor
    from pipeline.serve.client import classify

    texts = review_texts()[:6] + ["ok", "great coffee, will buy again " * 20]
    labels, probs = classify(server.client, name, texts)
    expected = OrtPredictor(server.folders[name]).classify(texts)
    assert labels == [r["label"] for r in expected]
    want = np.array([[r["probabilities"][k] for k in ("great", "other")] for r in expected])
    np.testing.assert_allclose(probs, want, atol=1e-5)
    assert probs.dtype == np.float32 and probs.shape == (len(texts), 2)


@pytest.mark.slow
def test_config_publishes_contract_and_label_order(server):
    config = server.client.get_model_config("bert")
    assert json.loads(config["parameters"]["labels"]["string_value"]) == ["great", "other"]
    assert config["max_batch_size"] == 8 and "dynamic_batching" in config
    assert [(i["name"], i["data_type"], i["dims"]) for i in config["input"]] == [("text", "TYPE_STRING", [1])]
    assert [(o["name"], o["data_type"], o["dims"]) for o in config["output"]] == [
        ("label", "TYPE_STRING", [1]), ("probabilities", "TYPE_FP32", [2])]
    assert config["instance_group"][0]["count"] == 2
    assert server.client.is_server_live() and server.client.is_server_ready()


def _bad_requests():
    import tritonclient.http as httpclient

    from pipeline.serve.client import text_input

    def named(name, data, dtype):
        item = httpclient.InferInput(name, list(data.shape), dtype)
        item.set_data_from_numpy(data)
        return [item]

    return {
        "empty batch": ([text_input(np.zeros((0, 1), dtype=object))], "empty batch|batch size|shape|0"),
        "non-UTF-8": ([text_input(np.array([[b"\xff\xfe\xfd"]], dtype=object))], "not valid UTF-8"),
        "wrong input name": (named("txt", np.array([[b"hello"]], dtype=object), "BYTES"), "txt"),
        "wrong dtype": (named("text", np.array([[1.0]], dtype=np.float32), "FP32"), "data-type|datatype|FP32"),
        "wrong shape": ([text_input(np.array([[b"a", b"b"]], dtype=object))], "shape"),
        "1 MB text": ([text_input(["x" * 1_000_000])], "over this server's limit"),
        "batch above max_batch_size": ([text_input(["hello"] * 9)], "batch-size must be <= 8"),
    }


@pytest.mark.slow
def test_bad_requests_get_a_named_error_and_the_server_keeps_serving(server):
    from tritonclient.utils import InferenceServerException

    from pipeline.serve.client import classify, failure_counts

    before = failure_counts(server.client, "bert")
    for what, (inputs, pattern) in _bad_requests().items():
        with pytest.raises(InferenceServerException, match=pattern) as info:
            server.client.infer("bert", inputs)
        assert info.value.message(), what
        labels, _ = classify(server.client, "bert", ["still serving after " + what])
        assert labels[0] in ("great", "other"), what
        assert server.client.is_server_ready() and server.client.is_model_ready("bert"), what
    # the bad requests that reach the model (non-UTF-8, 1 MB) are counted as failures by Triton itself; its
    # statistics are updated after the response is sent, so read them until they settle (5 s at most)
    for _ in range(50):
        after = failure_counts(server.client, "bert")
        if after["success"] - before["success"] >= len(_bad_requests()):
            break
        time.sleep(0.1)
    assert after["fail"] - before["fail"] >= 2
    assert after["success"] - before["success"] >= len(_bad_requests())


def test_loadtest_refuses_a_host_that_is_not_loopback(tmp_path):
    from conftest import run_cli

    done = run_cli("loadtest", "http://192.0.2.1:8000", "bert", "--out", str(tmp_path / "lt.json"))
    assert done.returncode == 2 and "not this machine's loopback" in done.stderr
    assert not (tmp_path / "lt.json").exists()


def test_loadtest_names_a_server_pid_that_does_not_exist():
    from pipeline.serve.contract import ServeError
    from pipeline.serve.loadtest import ServerProbe

    pytest.importorskip("psutil")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with pytest.raises(ServeError, match=f"--server-pid {dead.pid}: no such process"):
        ServerProbe(dead.pid)


@pytest.mark.slow
def test_loadtest_writes_json_and_png(server, tmp_path):
    from pipeline.serve.loadtest import LoadOptions, run_loadtest

    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"text": t}) + "\n" for t in review_texts()[:50]))
    options = LoadOptions(url=server.url, model="bert", concurrency=[1, 4], duration=1.0, warmup=0.5, max_requests=200,
                          texts_file=texts, model_dir=server.folders["bert"], server_pid=server.proc.pid)
    result = run_loadtest(options, tmp_path / "lt.json")
    assert json.loads((tmp_path / "lt.json").read_text()) == json.loads(json.dumps(result))
    assert (tmp_path / "lt.png").stat().st_size > 10_000
    assert [(r["model"], r["concurrency"]) for r in result["levels"]] == [("bert", 1), ("bert", 4)]
    for row in result["levels"]:
        assert row["errors"] == 0 and 0 < row["requests"] <= 200 and row["p50_ms"] <= row["p99_ms"]
        assert row["rss_first_10s_mb"] > 0 and row["server_cpu_cores"] > 0
        assert row["vs_in_process"] == pytest.approx(row["throughput"] / row["in_process_reference"])
    assert set(result["in_process"]) == {"1", "4"}


@pytest.mark.slow
def test_sigint_stops_a_server_started_in_the_background(tmp_path, tmp_path_factory):
    """A script's `bilm serve ... &` starts with SIGINT ignored; `kill -INT` must still stop it cleanly."""
    require_serve_extra()
    from pipeline.serve.client import http_client, wait_ready

    proc = ServerProcess([build_onnx_dir("bert", tmp_path_factory)], "--model-name", "bert",
                         log=tmp_path / "serve.log", sigint_ignored=True)
    try:
        wait_ready(http_client(proc.url), ["bert"], timeout_s=180, alive=proc.alive)
        try:
            code = proc.stop(timeout=60, sig=signal.SIGINT)
        except subprocess.TimeoutExpired:
            code = "still running 60 s after SIGINT"
        assert code == 0, proc.log_tail()
    finally:
        if proc.alive():
            proc.proc.kill()
        shutil.rmtree(proc.tmpdir, ignore_errors=True)


@pytest.mark.slow
def test_sigterm_finishes_in_flight_requests_and_stops(server):
    """Last in this module: SIGTERM while requests are in flight; they complete, the server exits 0."""
    from pipeline.serve.client import classify, http_client

    results, errors = [], []

    def send():
        try:
            client = http_client(server.url, network_timeout=60)
            results.append(classify(client, "xlnet", review_texts()[:8])[0])
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # let the requests reach the server
    code = server.stop()
    for t in threads:
        t.join(timeout=60)
    assert code == 0, server.log_tail()
    assert len(results) + len(errors) == 6
    assert results, f"no in-flight request completed: {errors[:2]}"
    assert not list(server.tmpdir.glob("bilm-serve-*")), "the server left its workspace behind"
