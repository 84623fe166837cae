"""DVC stage engine@FAMILY: artifacts/onnx/FAMILY -> artifacts/engines/FAMILY (TensorRT fp16 / int8 + parity).

Without a CUDA device or TensorRT it records the skip (engine.json with "built": false and the reason) and
exits 0, so `dvc repro` goes on. Usage: python stages/engine.py FAMILY
"""
from __future__ import annotations

import logging
import sys

from pipeline.config import ConfigError
from pipeline.export.tensorrt import EngineError, run_stage, summary_line

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python stages/engine.py FAMILY")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        print(summary_line(run_stage(sys.argv[1])))
    except (EngineError, ConfigError) as exc:  # the message names the problem and the fix
        sys.exit(f"engine@{sys.argv[1]} failed: {exc}")
