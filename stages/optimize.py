"""DVC stage optimize@FAMILY: artifacts/onnx/FAMILY -> artifacts/onnx/FAMILY-{fused,int8,fp16}, each gated on
validation macro-F1 against the fp32 ONNX model; metrics in artifacts/metrics/optimize/FAMILY.json."""
from pipeline.config import load_params
from pipeline.export.optimize import OptimizeError, optimize_family, summary
from pipeline.stage import family_stage

family_stage("optimize", lambda family: summary(family, optimize_family(family, load_params())),
             (OptimizeError, ValueError))
