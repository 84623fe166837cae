"""DVC stage export@FAMILY: artifacts/models/FAMILY -> artifacts/onnx/FAMILY (ONNX fp32 + parity + lint)."""
from pipeline.export.onnx import export_family, export_summary
from pipeline.stage import family_stage

family_stage("export", lambda family, params: export_summary(export_family(family, params)))
