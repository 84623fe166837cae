"""What a graph folder's export.json tells the sessions that load it; read without onnxruntime, so the serve
repository writer can pass it on too."""
from __future__ import annotations

from pathlib import Path

from pipeline.runtime.text import read_json_file

# export.json's `session` section: what sessions loading the graph should set for its speed, per provider, as
# {"cpu": {"disabled_optimizers": ["SkipLayerNormFusion"]}, "why": "..."} (pipeline/export/optimize.py writes it)
SESSION_KEY = "session"


def disabled_optimizers(folder: str | Path, provider: str = "cpu") -> list[str]:
    """ONNX Runtime graph transformers that the folder's export.json asks sessions on `provider` to skip."""
    info = Path(folder) / "export.json"
    section = read_json_file(info, "export record").get(SESSION_KEY) if info.is_file() else None
    settings = section.get(provider) if isinstance(section, dict) else None
    names = settings.get("disabled_optimizers") if isinstance(settings, dict) else None
    return [str(name) for name in names] if isinstance(names, list) else []
