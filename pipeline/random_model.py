"""A classifier folder with random weights, saved as the finetune stage saves one: for benchmarks at shapes the
pipeline did not train (bilm bench's base shapes, the GPU check) and for test fixtures."""
from __future__ import annotations

from pathlib import Path

from pipeline.config import ModelConfig, TokenizerConfig

LABELS = {0: "great", 1: "other"}  # the embedded dataset's labels


def save_random_classifier(family_name: str, shape: ModelConfig, corpus: Path, out: Path, tokenizer: TokenizerConfig,
                           classifier: bool = True, seed: int = 0) -> Path:
    """Train the family's tokenizer on `corpus` (a text file), build a model of `shape` with seeded random
    weights (the classifier, or the pretraining model when classifier=False) and save both to `out`."""
    import torch

    from pipeline.families import get_family

    family = get_family(family_name)
    trained = family.train_tokenizer([corpus], tokenizer)
    config = family.build_config(shape, trained, id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    torch.manual_seed(seed)
    model = family.classifier_for(config)(config) if classifier else family.pretraining_model(config)
    model.save_pretrained(out)
    trained.save_pretrained(out)
    return out
