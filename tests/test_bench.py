"""`bilm bench` on a fresh artifacts folder (tiny shapes), its roofline GEMM list and its profile reading.

No timed assertions: the speed figures go to the bench output, not into tests."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from export_fixtures import family_name, onnx_dir  # noqa: F401

from pipeline.bench import GRID, attention_shares, cell_gemms, is_attention, run_rows, speedup, speedup_text
from pipeline.families import get_family

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["bert", "xlnet"])
def test_roofline_gemms_add_up_to_the_familys_flops(name):
    """The GEMM list the roofline times covers the encoder FLOPs the family counts (its extras aside)."""
    config = {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 3, "num_attention_heads": 4,
              "d_model": 64, "d_inner": 256, "n_layer": 3, "n_head": 4}
    family = get_family(name)
    for batch, seq in GRID:
        gemms = sum(flops for _, _, flops in cell_gemms(config, batch, seq))
        extra = 3 * family.extra_layer_flops(64, batch, seq)
        assert gemms == pytest.approx(family.encoder_flops(config, batch, seq) - extra), (batch, seq)


@pytest.mark.parametrize("batch,seq,max_tokens", [(5, 24, 64), (8, 16, 64), (3, 100, 64), (4, 24, 0), (6, 24, None)])
def test_the_roofline_counts_the_runs_the_ort_predictor_makes(onnx_dir, batch, seq, max_tokens):
    """A chunked ORT cell's roofline is the GEMMs of its chunks: run_rows is how OrtPredictor splits a batch."""
    from pipeline.latency import fixed_batch
    from pipeline.runtime.ort import OrtPredictor

    predictor = OrtPredictor(onnx_dir, threads=1, max_batch_tokens=max_tokens)
    runs, real = [], predictor.session.run

    def run(outputs, feed, *args):
        runs.append(len(feed["input_ids"]))
        return real(outputs, feed, *args)

    predictor.session.run = run
    feed = fixed_batch(predictor, predictor.encoder.encode(["a fine review " * 60])[0], batch, seq)
    assert feed["input_ids"].shape == (batch, seq)
    predictor.predict_logits(feed)
    assert runs == run_rows(batch, seq, max_tokens) and sum(runs) == batch


def test_attention_share_from_a_real_onnxruntime_profile(onnx_dir, tmp_path):
    """Profile the tiny exported model at two shapes: one record per run, attention found and below the total."""
    options = ort.SessionOptions()
    options.enable_profiling, options.profile_file_prefix = True, str(tmp_path / "profile")
    session = ort.InferenceSession(str(onnx_dir / "model.onnx"), options, providers=["CPUExecutionProvider"])
    for batch, seq in ((1, 16), (4, 64)):
        ids = np.full((batch, seq), 5, dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        session.run(None, {i.name: feed[i.name] for i in session.get_inputs()})
    shares = attention_shares(json.loads(Path(session.end_profiling()).read_text()))
    assert len(shares) == 2
    for share in shares:
        assert 0 < share["attention_share"] < 1, share
        assert "MatMul" in share["top_ops"] or "FusedMatMul" in share["top_ops"], share


def test_attention_nodes_are_told_from_projections():
    assert is_attention("Softmax", [[1, 2, 8, 8]]) and is_attention("Attention", [[1, 8, 32]])
    assert is_attention("MatMul", [[1, 2, 8, 16], [1, 2, 16, 8]])  # Q . K^T
    assert not is_attention("MatMul", [[1, 8, 32], [32, 32]])  # a projection
    assert not is_attention("Add", [[1, 8, 32], [32]])  # a bias


def test_speedup_pairs_each_round_with_the_eager_call_of_the_same_round():
    """Round 2 ran slow for both (drift hits every backend alike): paired by round, the ratios read 1.00x / 0.91x /
    1.06x, which the table shows beside the medians' 1.00x."""
    eager, ort_times = [1.0, 2.0, 0.95], [1.0, 2.2, 0.9]
    s = speedup(ort_times, eager)
    assert s["speedup_vs_eager"] == pytest.approx(1.0) and s["speedup_rounds"] == pytest.approx([2 / 2.2, 0.95 / 0.9])
    assert speedup_text(s) == "1.00x (0.91-1.06)"
    assert speedup_text({"speedup_vs_eager": 1.5}) == "1.50x"  # bench.json written before the range existed
    assert speedup_text(speedup([2.0], [3.0])) == "1.50x"  # one round: no range


def test_each_ceiling_runtime_is_timed_after_the_others_threads_stop_spinning(tmp_path, monkeypatch):
    """ORT's pool threads spin for 10-20 ms after a call (timing.IDLE_SPIN_S): torch's GEMM timed inside that
    window read a fraction of its speed, so every runtime's calls start after a wait of that length."""
    import pipeline.bench as bench
    from pipeline.runtime.timing import IDLE_SPIN_S

    log: list[str] = []
    monkeypatch.setattr(bench.time, "sleep", lambda s: log.append(f"wait {s}"))
    rates = bench.Ceilings(tmp_path, threads=1, repeats=2)._best(1e9, {"ort": lambda: log.append("ort"),
                                                                       "torch": lambda: log.append("torch")})
    assert log == [f"wait {IDLE_SPIN_S}"] + ["ort"] * 3 + [f"wait {IDLE_SPIN_S}"] + ["torch"] * 3
    assert rates["by"] in ("ort", "torch") and set(rates["all"]) == {"ort", "torch"}


@pytest.mark.slow
def test_bench_runs_on_a_fresh_clone_with_and_without_out(tmp_path):
    """From an empty artifacts folder: random tiny-shape models are built, every CPU backend timed at each cell
    that fits, the CUDA rows listed (skipped here with the reason), and the JSON written where asked."""
    env = {**os.environ, "BILM_ARTIFACTS": str(tmp_path / "artifacts"), "PYTHONPATH": str(REPO)}
    base = [sys.executable, "-m", "pipeline.cli", "bench", "--preset", "tiny", "--rounds", "1", "--shapes",
            "1x16,2x64", "--real-texts", "8", "--families", "bert"]
    done = subprocess.run(base + ["--out", str(tmp_path / "out")], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "bench.json").read_text())
    (row,) = result["results"]
    assert (row["family"], row["preset"], row["model"]) == ("bert", "tiny", "random")
    assert set(row["cells"]) == {"pytorch", "ort-fp32", "ort-fused", "ort-int8"}
    for backend, cells in row["cells"].items():
        assert set(cells) == {"1x16", "2x64"}, backend
        assert [cells[c]["input_shape"] for c in ("1x16", "2x64")] == [[1, 16], [2, 64]], backend
        assert all(s["roofline_fraction"] > 0 for s in cells.values())
        assert ("profile" in cells["2x64"]) == backend.startswith("ort-")
    assert row["cells"]["pytorch"]["2x64"]["speedup_vs_eager"] == 1.0
    assert row["cells"]["pytorch"]["2x64"]["speedup_rounds"] == [1.0, 1.0]
    assert all(len(cells[c]["speedup_rounds"]) == 2 for cells in row["cells"].values() for c in cells)
    if Path("/proc/self/clear_refs").exists():  # 2 x 64 was sized at 1 x 64 before its first call, and fits
        assert set(row["memory_probes_gb"]) == {"1x64"} and row["skipped_cells"] == {}
    assert set(row["real_texts"]) == set(row["cells"]) and row["real_texts"]["ort-fp32"]["texts"] == 8
    assert set(row["gpu"]) == {"pytorch-cuda-fp16", "pytorch-cuda-bf16", "pytorch-cuda-compile"}
    import torch

    if not torch.cuda.is_available():
        assert all(g["status"].startswith("skipped: no CUDA device") for g in row["gpu"].values())
    assert result["machine"]["isa_flags"] and result["machine"]["cpu"]
    assert any(key.startswith("linear:") and key.endswith(":int8") for key in result["ceilings"])
    assert row["cells"]["ort-fp32"]["2x64"]["run_rows"] == [2]  # 128 tokens: one run
    # without --out: the default place, the models already built are reused; --real-texts 0: no real-text rows;
    # 64 tokens a run: ORT runs 2 x 64 as two runs of one row, and its roofline is theirs
    again = subprocess.run(base + ["--no-profile", "--real-texts", "0", "--ort-max-batch-tokens", "64"], cwd=REPO,
                           env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    (row,) = json.loads((tmp_path / "artifacts" / "bench" / "bench.json").read_text())["results"]
    assert row["real_texts"] == {}
    assert [row["cells"][b]["2x64"]["run_rows"] for b in ("pytorch", "ort-fp32", "ort-int8")] == [[2], [1, 1], [1, 1]]
    assert row["cells"]["ort-int8"]["2x64"]["input_shape"] == [2, 64]  # the cells' text does not come from those
    # stopped after its cells (Ctrl-C during the real texts): the JSON already holds every cell it timed
    from pipeline import bench
    from pipeline.paths import Paths

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    settings = bench.BenchSettings(families=["bert"], presets=["tiny"], rounds=1, warmup=1, profile=False,
                                   shapes=[(1, 16), (2, 64)])
    stopped = tmp_path / "stopped.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bench, "time_real_texts", interrupted)
        with pytest.raises(KeyboardInterrupt):
            bench.run_bench(settings, stopped, Paths(tmp_path / "artifacts"))
    (row,) = json.loads(stopped.read_text())["results"]
    assert set(row["cells"]["ort-int8"]) == {"1x16", "2x64"} and row["real_texts"] == {}
    # a cell that would not fit is skipped, with why, before its first call: 2 x 64 is sized at 1 x 64 and the
    # machine is told to have less than nothing available
    from pipeline.cell_memory import CellMemory

    if not Path("/proc/self/clear_refs").exists():
        return
    settings.real_texts = 0
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bench, "CellMemory", lambda: CellMemory(available=lambda: -1))
        bench.run_bench(settings, stopped, Paths(tmp_path / "artifacts"))
    (row,) = json.loads(stopped.read_text())["results"]
    assert set(row["cells"]["ort-int8"]) == {"1x16"}
    assert row["skipped_cells"]["2x64"].startswith("skipped: needs about"), row["skipped_cells"]
    assert set(row["memory_probes_gb"]) == {"1x64"}
