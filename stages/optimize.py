"""DVC stage optimize@FAMILY: artifacts/onnx/FAMILY -> artifacts/onnx/FAMILY-{fused,int8,fp16}, each gated on
validation macro-F1 against the fp32 ONNX model; metrics in artifacts/metrics/optimize/FAMILY.json."""
from pipeline.export.optimize import optimize_family, summary
from pipeline.stage import family_stage

family_stage("optimize", lambda family, params: summary(family, optimize_family(family, params)))
