"""Python-backend `model.py` files that `bilm export triton` copies into a repository. They run inside Triton's
Python backend with numpy and `tokenizers` (and onnxruntime for `onnxruntime_network.py`) alone: bilm never
imports them, and the repository needs no bilm installed."""
