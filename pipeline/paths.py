"""Every artifact path, in one place. Paths are relative to the artifacts root (default `artifacts/`)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    root: Path = Path(os.environ.get("BILM_ARTIFACTS", "artifacts"))

    @property
    def data(self) -> Path:
        return self.root / "data"

    def split(self, name: str) -> Path:
        return self.data / f"{name}.jsonl"

    @property
    def corpus(self) -> Path:
        return self.data / "corpus.txt"

    @property
    def label_map(self) -> Path:
        return self.data / "label2id.json"

    def tokenizer(self, family: str) -> Path:
        return self.root / "tokenizers" / family

    def pretrained(self, family: str) -> Path:
        return self.root / "pretrained" / family

    def model(self, family: str, ablation: bool = False) -> Path:
        return self.root / ("models_random_init" if ablation else "models") / family

    def onnx(self, family: str, variant: str = "fp32") -> Path:
        """fp32: the exported folder; other variants (fused, int8, fp16, ...) sit beside it."""
        return self.root / "onnx" / family if variant == "fp32" else self.root / "onnx" / f"{family}-{variant}"

    def engines(self, family: str) -> Path:
        """TensorRT engines of one family, with an engine.json per precision."""
        return self.root / "engines" / family

    @property
    def timing_cache(self) -> Path:
        return self.root / "engines" / "timing.cache"

    def ort_tensorrt_cache(self, name: str) -> Path:
        """ONNX Runtime's TensorRT execution provider: its engine and timing caches for one ONNX folder."""
        return self.root / "engines" / "ort-tensorrt" / name

    @property
    def evaluation(self) -> Path:
        return self.root / "evaluation"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def bench(self) -> Path:
        return self.root / "bench"

    def seed_run(self, family: str, seed: int) -> Path:
        return self.root / "seeds" / family / f"seed{seed}"

    def checkpoints(self, stage: str, family: str) -> Path:
        return self.root / "checkpoints" / stage / family

    def metrics(self, stage: str, family: str | None = None) -> Path:
        base = self.root / "metrics" / stage
        return base / family if family else base
