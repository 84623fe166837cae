"""What a graph folder's export.json tells the sessions that load it (input names, graph transformers to
skip); read without onnxruntime, so the serve repository writer can pass it on too."""
from __future__ import annotations

from pathlib import Path

from pipeline.runtime.text import read_json_file

# export.json's `session` section: what sessions loading the graph should set for its speed, per provider, as
# {"cpu": {"disabled_optimizers": ["SkipLayerNormFusion"]}, "why": "..."} (pipeline/export/optimize.py writes it)
SESSION_KEY = "session"


def export_record(folder: str | Path) -> dict:
    """The folder's export.json, or {} where it has none (a folder not written by `bilm export onnx`)."""
    info = Path(folder) / "export.json"
    return read_json_file(info, "export record") if info.is_file() else {}


def graph_inputs(folder: str | Path) -> list[str] | None:
    """The model's input names as export.json records them (without loading the graph)."""
    inputs = export_record(folder).get("inputs")
    return list(inputs) if isinstance(inputs, dict) and inputs else None


def disabled_optimizers(folder: str | Path, provider: str = "cpu") -> list[str]:
    """ONNX Runtime graph transformers that the folder's export.json asks sessions on `provider` to skip."""
    section = export_record(folder).get(SESSION_KEY)
    settings = section.get(provider) if isinstance(section, dict) else None
    names = settings.get("disabled_optimizers") if isinstance(settings, dict) else None
    return [str(name) for name in names] if isinstance(names, list) else []
