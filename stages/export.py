"""DVC stage export@FAMILY: artifacts/models/FAMILY -> artifacts/onnx/FAMILY (ONNX fp32 + parity + lint).

Usage: python stages/export.py FAMILY
"""
from __future__ import annotations

import logging
import sys

from pipeline.config import load_params
from pipeline.export.onnx import ExportError, export_onnx, export_summary, load_parity_texts
from pipeline.paths import Paths


def main(family: str) -> None:
    params = load_params()
    paths = Paths()
    texts = load_parity_texts(paths.split("test"), field=params.data.text_column)
    info = export_onnx(paths.model(family), paths.onnx(family), opset=params.export.opset,
                       atol=params.export.atol, exporter=params.export.exporter, texts=texts)
    print(export_summary(info))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python stages/export.py FAMILY")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        main(sys.argv[1])
    except ExportError as exc:  # the message names the problem and the fix; no traceback needed
        sys.exit(f"export@{sys.argv[1]} failed: {exc}")
