"""tokenizer stage: train a family's tokenizer on the train-split corpus; save a transformers fast tokenizer."""
from __future__ import annotations

from pipeline.config import Params
from pipeline.data import corpus_file
from pipeline.families import get_family
from pipeline.io import atomic_dir, write_json
from pipeline.paths import Paths


def train_tokenizer(family_name: str, params: Params, paths: Paths = Paths()) -> dict:
    family = get_family(family_name)
    tokenizer = family.train_tokenizer([corpus_file(paths)], params.tokenizer)
    with atomic_dir(paths.tokenizer(family_name)) as tmp:
        tokenizer.save_pretrained(tmp)
        # no wall-clock or host values: this folder is a DVC output, and its hash must follow the params alone
        info = {"family": family_name, "vocab_size": len(tokenizer), "tokenizer": params.tokenizer.__dict__}
        write_json(tmp / "bilm.json", info)
    return info
