"""`bilm export triton`: configs built and parsed with Triton's schema, checked against the ONNX graph, and the
repository served for real by the `tritonserver` binary that nvidia-pytriton ships (its only backend is
Python, so the network runs as the Python-backend ONNX Runtime model; the onnxruntime_onnx configs are
validated, not served, here)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from export_fixtures import build_onnx_dir, review_texts
from serve_support import REPO, RepositoryServer, require_serve_extra, run_cli_ok

from pipeline.serve.contract import ServeError


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    require_serve_extra()
    return {"bert": build_onnx_dir("bert", tmp_path_factory), "xlnet": build_onnx_dir("xlnet", tmp_path_factory)}


def _export(folders, repo, *args):
    run_cli_ok("export", "triton", str(folders["bert"]), str(folders["xlnet"]), str(repo),
               "--model-name", "bert", "--model-name", "xlnet", *args)


def test_native_repository_passes_schema_and_graph_checks(folders, tmp_path):
    from pipeline.serve.repository import check_ensemble, check_network, network_io, read_config

    _export(folders, tmp_path / "repo")
    for name, folder in folders.items():
        network = read_config(tmp_path / "repo" / f"{name}-network" / "config.pbtxt")
        assert network.platform == "onnxruntime_onnx" and network.max_batch_size == 64
        assert network.HasField("dynamic_batching")
        inputs, outputs = network_io(folder)
        assert set(inputs.values()) == {"TYPE_INT64"}  # as the ONNX graph declares them
        check_network(tmp_path / "repo" / f"{name}-network" / "config.pbtxt", inputs, outputs, 2)
        check_ensemble(tmp_path / "repo", name)
        tokenizer = read_config(tmp_path / "repo" / f"{name}-tokenizer" / "config.pbtxt")
        assert "bucket" in tokenizer.parameters["padding"].string_value
        assert (tmp_path / "repo" / f"{name}-network" / "labels.txt").read_text().split() == ["great", "other"]
    side = read_config(tmp_path / "repo" / "xlnet-tokenizer" / "config.pbtxt").parameters["padding_side"]
    assert side.string_value == "left"


def test_a_config_that_disagrees_with_the_graph_is_refused(folders, tmp_path):
    from pipeline.serve.repository import check_network, network_io

    _export(folders, tmp_path / "repo")
    path = tmp_path / "repo" / "bert-network" / "config.pbtxt"
    path.write_text(path.read_text().replace("TYPE_INT64", "TYPE_INT32", 1))
    with pytest.raises(ServeError, match="do not match the network"):
        check_network(path, *network_io(folders["bert"]), 2)
    path.write_text("name: bert-network\nnot_a_field: 3\n")
    with pytest.raises(ServeError, match="does not parse as a Triton model config"):
        check_network(path, *network_io(folders["bert"]), 2)


def test_python_network_skips_what_the_folders_export_json_asks(folders, tmp_path):
    """A CPU variant's export.json names ORT graph transformers for CPU sessions to skip (the split
    SkipLayerNormalization); the Python-backend network gets them as a config parameter and passes them on."""
    import json

    from pipeline.serve.repository import read_config

    variant = tmp_path / "bert-fused"
    shutil.copytree(folders["bert"], variant)
    info = json.loads((variant / "export.json").read_text())
    info["session"] = {"cpu": {"disabled_optimizers": ["SkipLayerNormFusion"]}}
    (variant / "export.json").write_text(json.dumps(info))
    run_cli_ok("export", "triton", str(variant), str(folders["xlnet"]), str(tmp_path / "repo"),
               "--model-name", "bert", "--model-name", "xlnet", "--network-backend", "python")
    bert = read_config(tmp_path / "repo" / "bert-network" / "config.pbtxt").parameters
    assert bert["disabled_optimizers"].string_value == "SkipLayerNormFusion"
    assert "disabled_optimizers" not in read_config(tmp_path / "repo" / "xlnet-network" / "config.pbtxt").parameters
    stand_in = (tmp_path / "repo" / "bert-network" / "1" / "model.py").read_text()
    assert "disabled_optimizers" in stand_in


@pytest.mark.slow
def test_repository_served_by_tritonserver_matches_bilm_predict(folders, tmp_path):
    from pipeline.runtime import OrtPredictor
    from pipeline.serve.client import classify, http_client, wait_ready

    repo = tmp_path / "repo"
    _export(folders, repo, "--network-backend", "python", "--max-batch-size", "16")
    server = RepositoryServer(repo, log=tmp_path / "tritonserver.log")
    try:
        client = http_client(server.url)
        wait_ready(client, ["bert", "xlnet"], timeout_s=180, alive=server.alive)
        texts = review_texts()[:5] + ["stale"]
        for name, folder in folders.items():
            labels, probs = classify(client, name, texts)
            expected = OrtPredictor(folder).classify(texts)
            assert labels == [r["label"] for r in expected], name
            want = np.array([[r["probabilities"][k] for k in ("great", "other")] for r in expected])
            # bucket padding (vs padding to the longest text) moves the logits by float rounding only
            np.testing.assert_allclose(probs, want, atol=1e-4)
        client.close()  # Triton waits for open HTTP connections before it exits
        assert server.stop() == 0, server.log_tail()
    finally:
        if server.alive():
            server.stop()
        shutil.rmtree(server.tmpdir, ignore_errors=True)


def test_export_refuses_a_folder_that_is_not_a_model(tmp_path):
    require_serve_extra()
    from pipeline.serve.repository import RepoOptions, export_repository

    with pytest.raises(ServeError, match="neither an ONNX folder"):
        export_repository([REPO / "pipeline"], tmp_path / "repo", RepoOptions())
    assert not (tmp_path / "repo").exists()
