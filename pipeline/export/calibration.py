"""Calibration data for static INT8: real train-split texts, tokenized as the runtime tokenizes them.

The reader feeds ONNX Runtime's calibrator length-sorted batches (each padded only to its own longest text),
so the activation ranges it records are those of real traffic, padding included.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from pipeline.errors import BilmError
from pipeline.runtime import TextEncoder


class CalibrationError(BilmError, ValueError):
    """A calibration set that cannot be used; the message names the fix."""


def encode_batches(onnx_dir: str | Path, texts: list[str], batch_size: int,
                   max_sequence: int | None = None) -> list[dict[str, np.ndarray]]:
    """`texts` tokenized as the runtime tokenizes them (cut at `max_sequence` if given), length-sorted, in
    batches each padded only to its own longest text."""
    encoder = TextEncoder(onnx_dir)
    if max_sequence is not None:
        encoder.tokenizer.enable_truncation(min(max_sequence, encoder.max_length))
    encoded = sorted(encoder.encode(list(texts)), key=lambda e: len(e.ids))
    return [encoder.pad(encoded[i: i + batch_size]) for i in range(0, len(encoded), batch_size)]


class BatchReader(CalibrationDataReader):
    """Feeds ready batches to ONNX Runtime's calibrator: `input_names` of each (all arrays when None)."""

    def __init__(self, batches: list[dict[str, np.ndarray]], input_names: list[str] | None = None):
        self._batches, self._names = batches, input_names
        self._iter: Iterator[dict[str, np.ndarray]] = self._feeds()

    def _feeds(self) -> Iterator[dict[str, np.ndarray]]:
        for batch in self._batches:
            yield batch if self._names is None else {name: batch[name] for name in self._names}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = self._feeds()


class TextCalibrationReader(BatchReader):
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
        super().__init__(encode_batches(onnx_dir, texts, batch_size), list(input_names))
