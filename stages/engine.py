"""DVC stage engine@FAMILY: artifacts/onnx/FAMILY -> artifacts/engines/FAMILY (TensorRT fp16 / int8 + parity).

Without a CUDA device or TensorRT it records the skip (engine.json with "built": false and the reason) and
exits 0, so `dvc repro` goes on."""
from pipeline.export.tensorrt import run_stage, summary_line
from pipeline.stage import family_stage

family_stage("engine", lambda family, params: summary_line(run_stage(family, params)))
