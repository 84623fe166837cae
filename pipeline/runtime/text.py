"""Text -> model inputs with the `tokenizers` library alone (no transformers), from an exported folder.

Reads `tokenizer.json` for the pipeline itself and `tokenizer_config.json` / `config.json` for what
transformers keeps outside it: padding side, pad token and its segment id, the maximum length, the labels.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Encoding, Tokenizer

from pipeline.errors import BilmError
from pipeline.model_limits import position_limit


class PredictorError(BilmError, RuntimeError):
    """A folder, provider or input that cannot be used; the message names the problem and the fix."""


def read_json_file(path: Path, what: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PredictorError(f"{path.parent} has no {path.name} ({what}); re-export the folder with "
                             f"`bilm export onnx MODEL_DIR {path.parent}`") from None
    except json.JSONDecodeError as exc:
        raise PredictorError(f"{path} is not valid JSON ({exc}); re-export the folder") from None


def _token_text(value: Any) -> str | None:
    """tokenizer_config stores special tokens as a string or as an AddedToken dict."""
    return value.get("content") if isinstance(value, dict) else value


@dataclass
class Encoded:
    """One text's token ids before padding; `truncated` when it was cut to the maximum length."""

    ids: list[int]
    type_ids: list[int]
    truncated: bool


class TextEncoder:
    def __init__(self, folder: str | Path):
        folder = Path(folder)
        if not (folder / "tokenizer.json").is_file():
            raise PredictorError(f"{folder} has no tokenizer.json; re-export it with `bilm export onnx`, "
                                 f"which saves the fast tokenizer next to model.onnx")
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tok_cfg = read_json_file(folder / "tokenizer_config.json", "tokenizer settings") \
            if (folder / "tokenizer_config.json").is_file() else {}
        config = read_json_file(folder / "config.json", "model config with id2label")
        self.max_length = self._max_length(tok_cfg, config)
        self.padding_side = tok_cfg.get("padding_side", "right")
        self.pad_type_id = int(tok_cfg.get("pad_token_type_id", 0))
        self.pad_id = self._pad_id(tok_cfg, config)
        self.tokenizer.no_padding()  # we pad per batch, to its longest text
        self.tokenizer.enable_truncation(self.max_length)

    @staticmethod
    def _max_length(tok_cfg: dict, config: dict) -> int:
        # the tokenizer's limit, and the model's own position limit where it has one (BERT, not XLNet)
        limits = [tok_cfg.get("model_max_length"), position_limit(config)]
        limits = [int(n) for n in limits if isinstance(n, (int, float)) and 0 < n < 10 ** 6]
        return min(limits) if limits else 512

    def _pad_id(self, tok_cfg: dict, config: dict) -> int:
        token = _token_text(tok_cfg.get("pad_token"))
        pad_id = self.tokenizer.token_to_id(token) if token else None
        pad_id = pad_id if pad_id is not None else config.get("pad_token_id")
        if pad_id is None:
            raise PredictorError("neither tokenizer_config.json nor config.json names a pad token; "
                                 "re-export the folder from a model whose tokenizer has one")
        return int(pad_id)

    def encode(self, texts: list[str]) -> list[Encoded]:
        encodings: list[Encoding] = self.tokenizer.encode_batch(texts)
        return [Encoded(e.ids, e.type_ids, truncated=bool(e.overflowing)) for e in encodings]

    def pad(self, items: list[Encoded], width: int | None = None) -> dict[str, np.ndarray]:
        """[batch, width] int64 input_ids / attention_mask / token_type_ids, padded on the tokenizer's side;
        width: the longest item's length by default (a larger one pads further, a smaller one is an error)."""
        length = max(len(item.ids) for item in items)
        if width is not None and width < length:
            raise ValueError(f"cannot pad items of {length} tokens to a width of {width}")
        length = width or length
        ids = np.full((len(items), length), self.pad_id, dtype=np.int64)
        types = np.full((len(items), length), self.pad_type_id, dtype=np.int64)
        mask = np.zeros((len(items), length), dtype=np.int64)
        for row, item in enumerate(items):
            cols = slice(length - len(item.ids), length) if self.padding_side == "left" else slice(0, len(item.ids))
            ids[row, cols], types[row, cols], mask[row, cols] = item.ids, item.type_ids, 1
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}

