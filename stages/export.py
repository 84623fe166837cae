"""DVC stage export@FAMILY: artifacts/models/FAMILY -> artifacts/onnx/FAMILY (ONNX fp32 + parity + lint)."""
from pipeline.config import load_params
from pipeline.export.onnx import ExportError, export_family, export_summary
from pipeline.stage import family_stage

family_stage("export", lambda family: export_summary(export_family(family, load_params())), (ExportError,))
