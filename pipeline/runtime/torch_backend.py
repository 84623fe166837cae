"""PyTorch eager predictor on a fine-tuned folder (config.json with id2label, tokenizer.json, weights).

Not imported by `pipeline.runtime`, which must stay importable without torch: import it from here.
"""
from __future__ import annotations

import inspect
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification

from pipeline.runtime.base import Predictor
from pipeline.runtime.text import PredictorError


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PredictorError(f"device {device!r} asked for, but torch sees no CUDA device; use cpu or auto")
    if device != "cpu" and not device.startswith("cuda"):
        raise PredictorError(f"unknown torch device {device!r}; use cpu, cuda, cuda:N or auto")
    return torch.device(device)


class TorchPredictor(Predictor):
    """The same tokenization, batching and softmax as every backend; the model runs in PyTorch eager mode."""

    def __init__(self, folder: str | Path, device: str = "cpu", threads: int | None = None):
        super().__init__(folder)
        self.device = resolve_device(device)
        if not sys.stderr.isatty():  # transformers' weight-loading bar: terminals only, not CI logs
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        if threads:
            torch.set_num_threads(threads)  # process-wide: torch has no per-model thread pool
        try:
            model = AutoModelForSequenceClassification.from_pretrained(self.folder)
        except (OSError, ValueError) as exc:
            raise PredictorError(f"{self.folder} holds no loadable classifier ({exc}); pass a fine-tuned "
                                 f"folder such as artifacts/models/bert") from None
        self.model = model.to(self.device).eval()
        # the encoder's inputs that this model's forward takes (BERT and XLNet take all three)
        accepted = inspect.signature(self.model.forward).parameters
        self.inputs = [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in accepted]

    def predict_logits(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        feed = {name: torch.from_numpy(np.ascontiguousarray(batch[name])).to(self.device) for name in self.inputs}
        with torch.inference_mode():
            logits = self.model(**feed).logits
        return logits.float().cpu().numpy()
