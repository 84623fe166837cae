"""Optimum cross-check, run with the python of the isolated optimum venv (see venvs.py), never imported
by the test suite itself: optimum's ONNX Runtime support caps transformers below 5, bilm needs 5.

    python optimum_check.py ONNX_DIR MODEL_DIR WORK_DIR TEXTS_JSON [--runs N] [--threads T]

1. Loads our ONNX folder (ONNX_DIR, written by `bilm export onnx`) with optimum's
   ORTModelForSequenceClassification and compares its logits with a plain onnxruntime session on the same
   inputs.
2. Exports the fine-tuned checkpoint (MODEL_DIR) with optimum's own exporter into WORK_DIR/optimum and
   compares its logits and latency with ours: same inputs, same thread count, one warm-up run excluded,
   the two sessions timed alternately, median of N.

Inputs come from the folder's own tokenizer.json through `tokenizers` (what bilm's runtime uses); the
transformers 4.x AutoTokenizer of this venv is also run and must give the same ids. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort


def encode(folder: Path, texts: list[str], max_length: int) -> dict[str, np.ndarray]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.enable_truncation(max_length)
    tok.enable_padding(pad_id=tok.token_to_id("[PAD]") or 0, pad_token="[PAD]")
    enc = tok.encode_batch(texts)
    return {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64)}


def session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def feed_for(sess: ort.InferenceSession, enc: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {i.name: enc[i.name] for i in sess.get_inputs()}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("onnx_dir", type=Path)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("work_dir", type=Path)
    parser.add_argument("texts_json", type=Path)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()

    import optimum
    import transformers
    from optimum.exporters.onnx import main_export
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer

    texts = json.loads(args.texts_json.read_text(encoding="utf-8"))
    enc = encode(args.onnx_dir, texts, args.max_length)
    result: dict = {"versions": {"optimum": optimum.__version__ if hasattr(optimum, "__version__") else None,
                                 "transformers": transformers.__version__, "onnxruntime": ort.__version__},
                    "batch": list(enc["input_ids"].shape)}
    try:
        from importlib.metadata import version
        result["versions"]["optimum"] = version("optimum")
        result["versions"]["optimum-onnx"] = version("optimum-onnx")
    except Exception:  # noqa: BLE001 - versions are informative only
        pass

    # transformers 4.x reading a tokenizer folder written by transformers 5: must give the same ids
    hf = AutoTokenizer.from_pretrained(args.onnx_dir)(texts, padding=True, truncation=True,
                                                      max_length=args.max_length, return_tensors="np")
    result["autotokenizer_same_ids"] = bool(
        all(np.array_equal(hf[k], enc[k]) for k in ("input_ids", "attention_mask", "token_type_ids")))

    # (1) our folder through optimum vs plain onnxruntime
    ours = session(args.onnx_dir / "model.onnx", args.threads)
    ours_logits = ours.run(["logits"], feed_for(ours, enc))[0]
    model = ORTModelForSequenceClassification.from_pretrained(args.onnx_dir, file_name="model.onnx",
                                                              provider="CPUExecutionProvider")
    optimum_logits = np.asarray(model(**enc).logits)
    result["load"] = {
        "max_abs_diff": float(np.abs(optimum_logits - ours_logits).max()),
        "label_agreement": float((optimum_logits.argmax(-1) == ours_logits.argmax(-1)).mean()),
        "logits": optimum_logits.tolist(),
        "id2label": {str(k): v for k, v in model.config.id2label.items()},
    }

    # (2) optimum's own export of the same checkpoint vs ours
    out = args.work_dir / "optimum"
    start = time.perf_counter()
    main_export(str(args.model_dir), out, task="text-classification", device="cpu")
    result["optimum_export_s"] = round(time.perf_counter() - start, 2)
    theirs = session(out / "model.onnx", args.threads)
    theirs_feed, ours_feed = feed_for(theirs, enc), feed_for(ours, enc)
    theirs_logits = theirs.run(None, theirs_feed)[0]
    times: dict[str, list[float]] = {"ours": [], "optimum": []}
    runs = {"ours": (ours, ours_feed), "optimum": (theirs, theirs_feed)}
    for sess, feed in runs.values():  # warm-up, excluded
        sess.run(None, feed)
    for _ in range(args.runs):  # alternate, so that load on a shared CPU hits both alike
        for name, (sess, feed) in runs.items():
            t0 = time.perf_counter()
            sess.run(None, feed)
            times[name].append((time.perf_counter() - t0) * 1e3)
    median = {name: float(np.median(v)) for name, v in times.items()}
    result["cross"] = {
        "max_abs_diff": float(np.abs(theirs_logits - ours_logits).max()),
        "label_agreement": float((theirs_logits.argmax(-1) == ours_logits.argmax(-1)).mean()),
        "optimum_inputs": [i.name for i in theirs.get_inputs()],
        "optimum_opset": next((o.version for o in __import__("onnx").load(str(out / "model.onnx")).opset_import
                               if o.domain in ("", "ai.onnx")), None),
        "median_ms": median,
        "latency_ratio_ours_over_optimum": median["ours"] / median["optimum"],
        "runs": args.runs,
        "threads": args.threads,
    }
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
