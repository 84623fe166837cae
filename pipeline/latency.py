"""What `evaluate` and `bilm bench` time, and how: the fixed-shape and real-text batches each backend runs, and
the interleaved timing of those over several backends. In one place so that the report's latency table and the
bench measure the same inputs the same way (they disagreed by up to 2x while each timed in its own way)."""
from __future__ import annotations

import platform
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from pipeline.runtime.base import Predictor, length_batches
from pipeline.runtime.text import Encoded
from pipeline.runtime.timing import interleaved

Batch = dict[str, np.ndarray]  # input name -> [batch, seq] ids
CELL_TEXTS = 400  # test texts joined into the one long text the fixed-shape cells are cut from


def long_text(predictor: Predictor, texts: list[str]) -> Encoded:
    """One real text of at least 512 tokens where the model allows (the first CELL_TEXTS texts joined),
    truncated at the model's max length: each fixed length is cut from it."""
    return predictor.encoder.encode([" ".join(texts[:CELL_TEXTS])])[0]


def fixed_batch(predictor: Predictor, text: Encoded, batch: int, length: int) -> Batch:
    """`batch` copies of a real text cut to `length` tokens: the input of a fixed-shape cell."""
    item = Encoded(text.ids[:length], text.type_ids[:length], truncated=False)
    return predictor.encoder.pad([item] * batch)


def real_batches(predictor: Predictor, encoded: list[Encoded], batch_size: int) -> list[Batch]:
    """Batches of real texts as the predictor's `classify` forms them (length-sorted, bucketed if it buckets)."""
    edges = [e for e in predictor.buckets if e <= predictor.encoder.max_length]
    plan = length_batches(dict(enumerate(len(e.ids) for e in encoded)), batch_size, edges)
    return [predictor.encoder.pad([encoded[i] for i in chunk], width) for chunk, width in plan]


def time_feeds(predictors: Mapping[str, Predictor], feeds: Mapping[str, Batch | list[Batch]], rounds: int,
               warmup: int, budget_s: float | None = None) -> dict[str, list[float]]:
    """Seconds per call of each predictor on its feed (one batch, or a list of batches run in turn as one call),
    interleaved round by round (runtime.timing.interleaved), each on its own clock (CUDA events for CUDA rows)."""
    def call(p: Predictor, feed: Batch | list[Batch]) -> Any:
        return [p.predict_logits(b) for b in feed] if isinstance(feed, list) else p.predict_logits(feed)

    calls = {k: (lambda p=p, f=feeds[k]: call(p, f)) for k, p in predictors.items()}
    return interleaved(calls, rounds, warmup, {k: p.clock for k, p in predictors.items()}, budget_s)


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
