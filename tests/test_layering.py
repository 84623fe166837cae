"""Import rules between layers (read from the source with tests/import_graph.py), and what the light paths load."""
from __future__ import annotations

import pytest

from conftest import modules_loaded
from import_graph import REPO, direct_imports, module_file, module_name

# shared leaves: they import only each other (trt_common: the types TensorRT's builder and runner share)
LEAVES = {"pipeline", "pipeline.errors", "pipeline.io", "pipeline.paths", "pipeline.trt_common", "pipeline.cuda_timing",
          "pipeline.venvs", "pipeline.cli_base", "pipeline.model_limits"}


def _modules(folder: str) -> list:
    return sorted((REPO / folder).rglob("*.py"))


def test_no_import_cycle_in_pipeline():
    # an import of a module's own packages is no edge: Python runs a package's __init__ before its modules
    graph = {m: {n for n in direct_imports(p) if not (m == n or m.startswith(n + "."))}
             for p in _modules("pipeline") for m in [module_name(p)]}

    def reaches(start: str, goal: str, seen: set) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and not seen.add(nxt) and reaches(nxt, goal, seen)):
                return True
        return False

    cycles = sorted({m for m in graph for n in graph[m] if reaches(n, m, set())})
    assert not cycles, f"modules in an import cycle: {cycles}"


@pytest.mark.parametrize("layer,allowed", [
    ("pipeline/runtime", ("pipeline.runtime",)),
    ("pipeline/serve", ("pipeline.runtime", "pipeline.serve")),
])
def test_serving_layers_import_only_runtime_and_leaves(layer, allowed):
    if not (REPO / layer).is_dir():
        pytest.skip(f"{layer} does not exist")
    bad = {f"{module_name(p)} -> {n}" for p in _modules(layer) for n in direct_imports(p)
           if n not in LEAVES and not n.startswith(allowed)}
    assert not bad, f"{layer} reaches outside its layer: {sorted(bad)}"


def test_leaves_import_nothing_of_bilm():
    for name in LEAVES - {"pipeline"}:
        assert direct_imports(module_file(name)) <= LEAVES, name


def test_the_onnx_runtime_path_loads_neither_torch_nor_transformers():
    code = "import pipeline.cli, pipeline.runtime, pipeline.runtime.ort, pipeline.export.commands"
    heavy = modules_loaded(code, ("torch", "transformers", "pipeline.export.onnx", "pipeline.training"))
    assert heavy == [], f"the ONNX Runtime path imports {heavy}"
