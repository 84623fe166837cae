"""DVC stage optimize@FAMILY: artifacts/onnx/FAMILY -> artifacts/onnx/FAMILY-{fused,int8,fp16}, each gated on
validation macro-F1 against the fp32 ONNX model; metrics in artifacts/metrics/optimize/FAMILY.json.

Usage: python stages/optimize.py FAMILY
"""
from __future__ import annotations

import logging
import sys

from pipeline.config import load_params
from pipeline.export.optimize import OptimizeError, optimize_family, summary


def main(family: str) -> None:
    print(summary(family, optimize_family(family, load_params())))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python stages/optimize.py FAMILY")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        main(sys.argv[1])
    except (OptimizeError, ValueError) as exc:  # the message names the problem and the fix
        sys.exit(f"optimize@{sys.argv[1]} failed: {exc}")
