#!/usr/bin/env bash
# One-go TensorRT check for a CUDA machine: what is installed, the GPU tests, then engines for BERT and XLNet
# with build time, parity and latency at batch 1 x 128. Results also land in $OUT (or /tmp/bilm_gpu_check).
#   bash scripts/gpu_check.sh                      # SHAPES="tiny,base" PRECISIONS="fp16,int8" by default
#   SHAPES=tiny bash scripts/gpu_check.sh          # quicker
set -u
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-/tmp/bilm_gpu_check}"
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

echo "== GPU"
nvidia-smi --query-gpu=name,compute_cap,memory.total,memory.used,driver_version --format=csv 2>&1 || echo "nvidia-smi not found"

echo "== Python packages"
python - <<'EOF'
import importlib
for name in ("torch", "tensorrt", "onnxruntime", "onnx", "polygraphy", "modelopt", "transformers"):
    try:
        mod = importlib.import_module(name)
        print(f"{name:12s} {getattr(mod, '__version__', '?')}")
    except Exception as exc:
        print(f"{name:12s} MISSING ({type(exc).__name__}: {str(exc)[:100]})")
try:
    import torch
    print("torch CUDA:", torch.version.cuda, "available:", torch.cuda.is_available(),
          torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
    import onnxruntime as ort
    print("onnxruntime providers:", ort.get_available_providers())
except Exception as exc:
    print("probe failed:", exc)
from pipeline.export.tensorrt import unavailable_reason
from pipeline.runtime.ort import onnxruntime_conflict, tensorrt_ep_mismatch
print("engine build possible:", unavailable_reason() or "yes")
print("onnxruntime install:", onnxruntime_conflict() or "ok")
print("ORT TensorRT EP vs installed TensorRT:", tensorrt_ep_mismatch() or "ok (or one of them absent)")
EOF

if ! python -c "import tensorrt" 2>/dev/null; then
  echo "TensorRT is NOT installed here: bash scripts/install.sh --gpu (needs PyPI and pypi.nvidia.com), then rerun."
  echo "Running what is possible without it (the CPU tests of tests/test_tensorrt.py)."
  timeout 300 python -m pytest tests/test_tensorrt.py -q -x -p no:cacheprovider 2>&1 | tail -15
  exit 2
fi

echo "== GPU tests (pytest -m gpu)"
timeout 420 python -m pytest -m gpu tests/test_tensorrt.py -q -x -p no:cacheprovider 2>&1 | tail -25

echo "== Engines: build, parity, latency at b1 x s128"
timeout 540 python scripts/gpu_check.py --shapes "${SHAPES:-tiny,base}" --precisions "${PRECISIONS:-fp16,int8}" \
  --out "$OUT_DIR" 2>&1 | grep -v -E "Warning|warn\(|^\s*$" | tail -40
echo "results: $OUT_DIR/gpu_check.json"
