"""Texts to classify, from arguments, a text file or JSONL, each with where it came from and any error.

A bad JSONL line (invalid JSON, no text field) is an error for that line only; the rest go on.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable


@dataclass
class InputItem:
    source: str  # "arg 1", "line 3", ... for messages and output
    text: str | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # an "id" carried from the JSONL row to the output


def items_from_texts(texts: Iterable[str], source: str = "arg") -> list[InputItem]:
    return [InputItem(f"{source} {i}", text=t) for i, t in enumerate(texts, 1)]


def item_from_jsonl(line: str, number: int, text_field: str = "text") -> InputItem | None:
    """One JSONL line -> an item; None for a blank line."""
    if not line.strip():
        return None
    source = f"line {number}"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        return InputItem(source, error=f"not valid JSON ({exc.msg} at column {exc.colno})")
    if not isinstance(row, dict):
        return InputItem(source, error=f'expected an object like {{"{text_field}": "..."}}, got {type(row).__name__}')
    extra = {"id": row["id"]} if "id" in row else {}
    if text_field not in row:
        keys = ", ".join(sorted(row)) or "none"
        return InputItem(source, error=f'no "{text_field}" field (keys: {keys}); pass --field to use another',
                         extra=extra)
    return InputItem(source, text=row[text_field], extra=extra)


def items_from_jsonl(lines: Iterable[str], text_field: str = "text") -> list[InputItem]:
    items = (item_from_jsonl(line, n, text_field) for n, line in enumerate(lines, 1))
    return [item for item in items if item is not None]


def items_from_lines(lines: Iterable[str]) -> list[InputItem]:
    """A plain text file: one text per non-blank line."""
    return [InputItem(f"line {n}", text=line.rstrip("\n")) for n, line in enumerate(lines, 1) if line.strip()]


def classify_items(predictor, items: list[InputItem], batch_size: int = 32) -> list[dict[str, Any]]:
    """Results in input order: the predictor's for readable items, the reading error for the others."""
    readable = [item for item in items if item.error is None]
    predicted = iter(predictor.classify([item.text for item in readable], batch_size=batch_size))
    out = []
    for item in items:
        result = {"error": item.error} if item.error is not None else next(predicted)
        out.append({"source": item.source, **item.extra, **result})
    return out
