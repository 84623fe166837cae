"""The serving contract shared by `bilm serve` and `bilm export triton` (Triton's v2 protocol):

input `text` BYTES [-1, 1] (UTF-8); outputs `label` BYTES [-1, 1] and `probabilities` FP32 [-1, n_labels], in
the label order of the folder's config.json id2label (published in the model config as parameter `labels`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.errors import BilmError
from pipeline.runtime import Predictor, softmax
from pipeline.runtime.text import Encoded, read_json_file

INPUT = "text"
LABEL = "label"
PROBABILITIES = "probabilities"
DEFAULT_MAX_TEXT_BYTES = 64 * 1024  # a review is ~1 KB; a model sees at most max_length tokens anyway
SERVE_INSTALL = ('pip install -e ".[serve]" && pip install --no-deps "nvidia-pytriton>=0.7,<0.8" && '
                 'python -m pipeline.serve.stubenv')


class ServeError(BilmError):
    """A folder, option or environment that serving cannot use; the message names the fix."""


class BadRequest(ValueError):
    """A request the model cannot answer; Triton returns the message to the client (HTTP 400 / gRPC error)."""


def labels_of(folder: Path) -> list[str]:
    """Label names in id order (config.json id2label): the columns of `probabilities`."""
    id2label = read_json_file(Path(folder) / "config.json", "model config with id2label").get("id2label") or {}
    if not id2label:
        raise ServeError(f"{folder}/config.json has no id2label; export a fine-tuned classifier folder")
    return [id2label[k] for k in sorted(id2label, key=int)]


def folder_kind(folder: Path) -> str:
    """"onnx" (model.onnx) or "tensorrt" (an engine folder: engine.json naming one engine)."""
    folder = Path(folder)
    if (folder / "model.onnx").is_file():
        return "onnx"
    if (folder / "engine.json").is_file():
        record = json.loads((folder / "engine.json").read_text(encoding="utf-8"))
        if "engines" in record:
            raise ServeError(f"{folder} holds the engines of a family; pass one precision's folder, e.g. "
                             f"{folder / 'fp16'}")
        return "tensorrt"
    raise ServeError(f"{folder} is neither an ONNX folder (model.onnx) nor a TensorRT engine folder "
                     f"(engine.json); export one with `bilm export onnx` or `bilm export trt`")


def open_predictor(folder: Path, threads: int | None, arena: bool = True) -> Predictor:
    """The runtime's Predictor for a folder: ONNX Runtime (CPU, `threads` intra-op threads; arena=False: memory
    goes back after each run instead of staying at the largest batch's peak) or TensorRT."""
    if folder_kind(folder) == "tensorrt":
        from pipeline.runtime.trt import TrtPredictor  # torch + tensorrt: only for engine folders

        return TrtPredictor(folder)
    from pipeline.runtime import OrtPredictor

    return OrtPredictor(folder, threads=threads, arena=arena)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def split_threads(instances: int, total: int | None = None) -> int:
    """Intra-op threads per instance: ONNX Runtime's default (one per core, per session) oversubscribes the
    cores as soon as two instances run at once."""
    return max(1, (total or cpu_count()) // instances)


def decode_texts(raw: np.ndarray, max_bytes: int) -> list[str]:
    """[n, 1] object array of bytes -> n strings; BadRequest names the first bad item."""
    if raw.size == 0:
        raise BadRequest("empty batch: send at least one text")
    texts = []
    for i, item in enumerate(raw.reshape(-1)):
        data = item if isinstance(item, bytes) else str(item).encode("utf-8")
        if len(data) > max_bytes:
            raise BadRequest(f"text {i} is {len(data)} bytes, over this server's limit of {max_bytes} bytes "
                             f"(bilm serve --max-text-bytes); the model reads only its first tokens anyway")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequest(f"text {i} is not valid UTF-8 ({exc.reason} at byte {exc.start}); send UTF-8 "
                             f"encoded text") from None
        if not text.strip():
            raise BadRequest(f"text {i} is empty: nothing to classify")
        texts.append(text)
    return texts


def length_groups(lengths: Sequence[int], max_ratio: float = 1.5) -> list[list[int]]:
    """Indices grouped by token length: sorted, a new group whenever a text is more than `max_ratio` times the
    group's shortest, so that no text is padded beyond ~max_ratio x its length. [5, 80, 6, 70] -> [[0, 2], [3, 1]]."""
    groups: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda k: lengths[k]):
        if groups and lengths[i] <= max_ratio * lengths[groups[-1][0]]:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def batch_probabilities(predictor: Predictor, encoded: list[Encoded], max_ratio: float = 1.5) -> np.ndarray:
    """[n, n_labels] float32 probabilities; each length group is padded (on the tokenizer's side: XLNet pads
    left) only to its own longest text."""
    probs = np.empty((len(encoded), len(predictor.id2label)), dtype=np.float32)
    for group in length_groups([len(e.ids) for e in encoded], max_ratio):
        logits = predictor.predict_logits(predictor.encoder.pad([encoded[i] for i in group]))
        probs[group] = softmax(logits.astype(np.float32, copy=False))
    return probs


def classify_request(predictor: Predictor, labels: list[str], raw: np.ndarray, max_bytes: int) -> dict:
    """One Triton batch: `text` [n, 1] bytes -> {label: [n, 1] bytes, probabilities: [n, n_labels] float32}."""
    texts = decode_texts(raw, max_bytes)
    probs = batch_probabilities(predictor, predictor.encoder.encode(texts))
    names = np.array([labels[k].encode("utf-8") for k in probs.argmax(axis=1)], dtype=object).reshape(-1, 1)
    return {LABEL: names, PROBABILITIES: probs}
