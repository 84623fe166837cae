"""What a config.json says about the inputs a model takes. A leaf: export, training and runtime share it."""
from __future__ import annotations


def position_limit(config: dict) -> int | None:
    """The most tokens a config.json's position table takes: max_position_embeddings, less pad_token_id + 1 for
    RoBERTa-style models (their position ids start after the padding id); None without one (XLNet: -1)."""
    positions = config.get("max_position_embeddings")
    if not isinstance(positions, int) or positions <= 0:
        return None
    if "roberta" in str(config.get("model_type", "")):
        positions -= int(config.get("pad_token_id") or 0) + 1
    return positions
