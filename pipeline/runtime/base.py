"""The Predictor interface every inference backend implements (ONNX Runtime now; PyTorch, TensorRT later).

A backend only turns a padded batch into logits (`predict_logits`). Tokenizing, batching by length,
truncation warnings, per-item errors and softmax live here, so every backend classifies the same way.
"""
from __future__ import annotations

import abc
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline.runtime.text import Encoded, PredictorError, TextEncoder, read_json_file
from pipeline.runtime.timing import Clock, wall_seconds


class TruncationWarning(UserWarning):
    """Some texts were longer than the model's maximum length and were cut."""


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def bucket_width(length: int, buckets: Sequence[int]) -> int:
    """The smallest bucket edge >= length; the length itself beyond the last edge or without buckets."""
    return next((edge for edge in sorted(buckets) if edge >= length), length)


def length_batches(lengths: dict[int, int], batch_size: int,
                   buckets: Sequence[int] = ()) -> list[tuple[list[int], int]]:
    """Item ids {id: tokens} -> [(ids of one batch, padded width)]: sorted by length, so a batch mixes lengths
    only within one bucket; each batch is padded to its bucket's edge (its longest item without buckets)."""
    order = sorted(lengths, key=lambda i: lengths[i])
    groups: dict[int, list[int]] = {}
    for i in order:
        groups.setdefault(bucket_width(lengths[i], buckets) if buckets else 0, []).append(i)
    out = []
    for edge, items in groups.items():
        for start in range(0, len(items), batch_size):
            chunk = items[start: start + batch_size]
            out.append((chunk, max(edge, lengths[chunk[-1]])))
    return out


class Predictor(abc.ABC):
    """Classifies texts with a model folder: config.json (id2label) + tokenizer files + the backend's model."""

    clock: Clock = staticmethod(wall_seconds)  # how to time one call; a CUDA backend reads CUDA events
    # padded widths (tokens) of batches: texts are grouped by the 32-token bucket they fall in and each batch is
    # padded to its bucket's edge. Against length-sorted batches padded to their longest text, this cut the
    # padding of 512 real test texts at batch 64 from 29% to 14% and raised ORT's throughput 1.28x (bench).
    # () pads each length-sorted batch to its longest text.
    buckets: tuple[int, ...] = tuple(range(32, 4097, 32))

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise PredictorError(f"model folder {self.folder} does not exist; export one with "
                                 f"`bilm export onnx MODEL_DIR {self.folder}`")
        config = read_json_file(self.folder / "config.json", "model config with id2label")
        if not config.get("id2label"):
            raise PredictorError(f"{self.folder}/config.json has no id2label; re-export from a fine-tuned "
                                 f"classifier folder")
        self.id2label = {int(k): v for k, v in config["id2label"].items()}
        self.encoder = TextEncoder(self.folder)

    @abc.abstractmethod
    def predict_logits(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """[batch, seq] int64 input_ids / attention_mask / token_type_ids -> [batch, num_labels] logits."""

    def classify(self, texts: Sequence[Any], batch_size: int = 32) -> list[dict[str, Any]]:
        """One result per text, in order: {label, score, probabilities, truncated} or {error}."""
        results: list[dict[str, Any]] = [{} for _ in texts]
        valid = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                results[i] = {"error": f"expected a string, got {type(text).__name__}"}
            elif not text.strip():
                results[i] = {"error": "empty text: nothing to classify"}
            else:
                valid.append(i)
        encoded = dict(zip(valid, self.encoder.encode([texts[i] for i in valid])))
        self._warn_truncated([i for i, e in encoded.items() if e.truncated])
        lengths = {i: len(e.ids) for i, e in encoded.items()}
        edges = [e for e in self.buckets if e <= self.encoder.max_length]  # never past the position limit
        for chunk, width in length_batches(lengths, batch_size, edges):
            probs = softmax(self.predict_logits(self.encoder.pad([encoded[i] for i in chunk], width)))
            for i, p in zip(chunk, probs):
                results[i] = self._result(p, encoded[i])
        return results

    def _result(self, probs: np.ndarray, encoded: Encoded) -> dict[str, Any]:
        best = int(probs.argmax())
        return {"label": self.id2label[best], "score": float(probs[best]),
                "probabilities": {self.id2label[k]: float(p) for k, p in enumerate(probs)},
                "truncated": encoded.truncated}

    def _warn_truncated(self, indices: list[int]) -> None:
        if indices:
            shown = ", ".join(map(str, indices[:10])) + (", ..." if len(indices) > 10 else "")
            warnings.warn(f"{len(indices)} text(s) longer than {self.encoder.max_length} tokens were truncated "
                          f"(items {shown})", TruncationWarning, stacklevel=3)
