"""bilm: train, fine-tune, export and compare bidirectional language models (BERT, XLNet)."""

__version__ = "0.1.0"
