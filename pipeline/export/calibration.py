"""Calibration data for static INT8: real train-split texts, tokenized as the runtime tokenizes them.

The reader feeds ONNX Runtime's calibrator length-sorted batches (each padded only to its own longest text),
so the activation ranges it records are those of real traffic, padding included.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from pipeline.runtime import TextEncoder


class CalibrationError(ValueError):
    """A calibration set that cannot be used; the message names the fix."""


class TextCalibrationReader(CalibrationDataReader):
    """Batches of `input_names` arrays from `texts`, tokenized with the ONNX folder's own tokenizer."""

    def __init__(self, onnx_dir: str | Path, texts: list[str], input_names: list[str], batch_size: int = 8):
        texts = [t for t in texts if isinstance(t, str) and t.strip()]
        if not texts:
            raise CalibrationError("the calibration set is empty: static INT8 needs real texts to measure "
                                   "activation ranges; check artifacts/data/train.jsonl and "
                                   "optimize.calibration_size, or use optimize.int8_method=dynamic")
        if batch_size < 1:
            raise CalibrationError(f"calibration batch size must be at least 1, got {batch_size}")
        self.size = len(texts)
        encoder = TextEncoder(onnx_dir)
        encoded = sorted(encoder.encode(texts), key=lambda e: len(e.ids))
        self._batches = [encoder.pad(encoded[i: i + batch_size]) for i in range(0, len(encoded), batch_size)]
        self._names = list(input_names)
        self._iter: Iterator[dict[str, np.ndarray]] = self._feeds()

    def _feeds(self) -> Iterator[dict[str, np.ndarray]]:
        for batch in self._batches:
            yield {name: batch[name] for name in self._names}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = self._feeds()
