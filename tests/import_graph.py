"""The import graph of bilm's own modules, read from the source (ast): what each module imports of
`pipeline`, at module level and inside functions (a lazy import runs when its function does).

Used by tests/test_dvc.py (a stage's deps are the files its script imports, transitively) and by
tests/test_layering.py (the import rules between layers).
"""
from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def module_file(name: str) -> Path | None:
    """pipeline.x.y -> pipeline/x/y.py or pipeline/x/y/__init__.py (None if neither exists)."""
    base = REPO.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _parents(name: str) -> list[str]:
    """Importing pipeline.a.b runs pipeline/__init__.py and pipeline/a/__init__.py first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _imported_names(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # submodules, if they are
    return names


def _loads_whole_package(tree: ast.AST) -> bool:
    """A package that imports its own modules by name, `import_module(f"{__name__}.{name}")` (the family
    registry): it may import any of them."""
    return any(isinstance(n, ast.Call) and getattr(n.func, "attr", getattr(n.func, "id", None)) == "import_module"
               and n.args and isinstance(n.args[0], ast.JoinedStr)
               and any(isinstance(v, ast.Name) and v.id == "__name__" for part in n.args[0].values
                       for v in ast.walk(part))
               for n in ast.walk(tree))


@lru_cache(maxsize=None)
def direct_imports(path: Path) -> frozenset[str]:
    """The bilm modules (dotted names) a file imports, each one with a file of its own."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = {n for name in _imported_names(tree) if name.split(".")[0] == "pipeline"
             for n in (*_parents(name), name) if module_file(n)}
    if path.name == "__init__.py" and _loads_whole_package(tree):
        package = ".".join(path.parent.relative_to(REPO).parts)
        found.update(f"{package}.{p.stem}" for p in path.parent.glob("*.py") if p.name != "__init__.py")
    return frozenset(found)


def closure(path: Path) -> set[Path]:
    """Every bilm source file that running `path` may import, `path` included."""
    seen, todo = {path.resolve()}, [path.resolve()]
    while todo:
        for name in direct_imports(todo.pop()):
            file = module_file(name).resolve()
            if file not in seen:
                seen.add(file)
                todo.append(file)
    return seen


def module_name(path: Path) -> str:
    rel = path.resolve().relative_to(REPO).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)
