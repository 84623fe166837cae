"""PyTorch predictor on a fine-tuned folder (config.json with id2label, tokenizer.json, weights): eager fp32
on the CPU (transformers' default SDPA attention), and on a CUDA device fp16 or bf16 weights, optionally
`torch.compile(mode="reduce-overhead")`, which replays CUDA graphs.

Not imported by `pipeline.runtime`, which must stay importable without torch: import it from here.
"""
from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification

from pipeline.cuda_timing import cuda_seconds
from pipeline.runtime.base import Predictor
from pipeline.runtime.text import PredictorError

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class TorchVariant:
    """One PyTorch row of `evaluate` and `bilm bench`."""

    name: str
    device: str  # "cpu" or "cuda"
    dtype: str = "fp32"  # a DTYPES key
    compile: bool = False  # torch.compile(mode="reduce-overhead"): CUDA graphs, one per input shape


# The CUDA rows: what a GPU user without TensorRT runs, and what TensorRT must beat.
CUDA_VARIANTS = (TorchVariant("pytorch-cuda-fp16", "cuda", "fp16"), TorchVariant("pytorch-cuda-bf16", "cuda", "bf16"),
                 TorchVariant("pytorch-cuda-compile", "cuda", "fp16", compile=True))


def cuda_missing() -> str | None:
    """Why this machine cannot run the CUDA rows, or None when it can."""
    if torch.cuda.is_available():
        return None
    build = f"a CPU-only build ({torch.__version__})" if torch.version.cuda is None else \
        f"built for CUDA {torch.version.cuda} but finding no device or driver"
    return f"no CUDA device: torch is {build}; run on a GPU machine with a CUDA torch"


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PredictorError(f"device {device!r} asked for, but torch sees no CUDA device; use cpu or auto")
    if device != "cpu" and not device.startswith("cuda"):
        raise PredictorError(f"unknown torch device {device!r}; use cpu, cuda, cuda:N or auto")
    return torch.device(device)


class TorchPredictor(Predictor):
    """The same tokenization, batching and softmax as every backend; the model runs in PyTorch."""

    def __init__(self, folder: str | Path, device: str = "cpu", threads: int | None = None, dtype: str = "fp32",
                 compile: bool = False):
        super().__init__(folder)
        self.device = resolve_device(device)
        if dtype not in DTYPES or (dtype != "fp32" and self.device.type != "cuda"):
            raise PredictorError(f"dtype {dtype!r} on {self.device}: use fp32 on the CPU, or fp16/bf16/fp32 on cuda")
        if not sys.stderr.isatty():  # transformers' weight-loading bar: terminals only, not CI logs
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        if threads:
            torch.set_num_threads(threads)  # process-wide: torch has no per-model thread pool
        try:
            model = AutoModelForSequenceClassification.from_pretrained(self.folder, dtype=DTYPES[dtype])
        except (OSError, ValueError) as exc:
            raise PredictorError(f"{self.folder} holds no loadable classifier ({exc}); pass a fine-tuned "
                                 f"folder such as artifacts/models/bert") from None
        self.model = model.to(self.device).eval()
        # the encoder's inputs that this model's forward takes (BERT and XLNet take all three)
        accepted = inspect.signature(self.model.forward).parameters
        self.inputs = [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in accepted]
        # reduce-overhead: CUDA graphs, one recorded per input shape (buckets keep the shapes few); the compiled
        # code turns dynamic after the second shape instead of recompiling for each
        self.forward = torch.compile(self.model, mode="reduce-overhead") if compile else self.model
        if self.device.type == "cuda":
            self.clock = cuda_seconds

    def device_feed(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {name: torch.from_numpy(np.ascontiguousarray(batch[name])).to(self.device) for name in self.inputs}

    def run(self, feed: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits on the device, from inputs already there (what the CUDA rows time)."""
        with torch.inference_mode():
            return self.forward(**feed).logits

    def predict_logits(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return self.run(self.device_feed(batch)).float().cpu().numpy()
