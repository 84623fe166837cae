"""bilm's TensorRT calls against the real TensorRT Python bindings, on a CPU.

`import tensorrt` needs libnvinfer, which the `tensorrt-cu*-libs` packages fetch from pypi.nvidia.com, and
building needs a GPU. The bindings wheels themselves are plain PyPI wheels of about 1 MB, so this test
downloads them (cached under $BILM_TRT_BINDINGS or ~/.cache/bilm/tensorrt-bindings) and checks, without
importing them, that every TensorRT class, method, property and enum member that pipeline/export/tensorrt.py
and pipeline/runtime/trt.py touch exists:
- class by class, against NVIDIA's type stubs for TensorRT 10.13 (`tensorrt-stubs`, the only ones published);
- by name, in the compiled bindings of the oldest and newest TensorRT 10 and 11 wheels on PyPI (the `gpu`
  extra's range): pybind11 keeps every registered name in the module's string table.
It also checks the premise of `engine.typing`: the FP16/INT8 builder flags exist in 10 and are gone in 11.
Skips without a network (BILM_TRT_API_REQUIRED=1 makes that a failure).
"""
from __future__ import annotations

import ast
import functools
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from interop.venvs import skip_or_fail

pytestmark = pytest.mark.interop  # fetches TensorRT's bindings and stubs from PyPI: `python -m pytest -m interop`
REPO = Path(__file__).resolve().parents[1]
SOURCES = [REPO / "pipeline" / "export" / "tensorrt.py", REPO / "pipeline" / "runtime" / "trt.py",
           REPO / "pipeline" / "trt_common.py", REPO / "scripts" / "gpu_check.py"]
STUBS = ("tensorrt-stubs", "10.13.0.35.1")
TRT10 = ["10.8.0.43", "10.16.1.11"]  # tensorrt-cu12-bindings: the first 10.x wheel on PyPI after the beta, the last
TRT11 = ["11.0.0.114", "11.4.0.106"]

# What each TensorRT-holding name in SOURCES is: the code names these objects consistently so that a
# reader (and this test) knows their type. "trt" is the module itself.
OBJECTS = {"trt": "tensorrt", "builder": "Builder", "network": "INetworkDefinition", "config": "IBuilderConfig",
           "parser": "OnnxParser", "err": "ParserError", "optimization_profile": "IOptimizationProfile",
           "runtime": "Runtime", "engine": "ICudaEngine", "context": "IExecutionContext", "cache": "ITimingCache",
           "tensor": "ITensor"}
# members the Python package adds on top of the compiled module (tensorrt_bindings/__init__.py)
PYTHON_LEVEL = {("tensorrt", "__version__"), ("tensorrt", "nptype"), ("Logger", "WARNING")}
WEAK_TYPING_ONLY = {("BuilderFlag", "FP16"), ("BuilderFlag", "INT8")}  # removed in TensorRT 11


def _cache() -> Path:
    return Path(os.environ.get("BILM_TRT_BINDINGS", Path.home() / ".cache" / "bilm" / "tensorrt-bindings"))


def _wheel(name: str, version: str) -> Path:
    folder = _cache() / f"{name}-{version}"
    found = sorted(folder.glob("*.whl"))
    if not found:
        folder.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--only-binary", ":all:",
               "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64", "-d", str(folder),
               f"{name}=={version}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        found = sorted(folder.glob("*.whl"))
        if proc.returncode or not found:  # BILM_TRT_API_REQUIRED=1: fail instead of skipping
            skip_or_fail("trt_api", f"could not download {name}=={version}: {proc.stderr.strip()[-300:]}")
    return found[0]


def _read(wheel: Path, suffix: str) -> bytes:
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(next(n for n in zf.namelist() if n.endswith(suffix)))


_CLASS = re.compile(r"^class (\w+)")
_MEMBER = re.compile(r"^    (?:def (\w+)\(|(\w+)\s*[:=])")  # methods, properties, enum members, attributes
_MODULE_LEVEL = re.compile(r"^(?:def (\w+)\(|(\w+)\s*[:=])")


@pytest.fixture(scope="module")
def trt10_stubs() -> dict[str, set[str]]:
    """class (and the module, as "tensorrt") -> member names, from NVIDIA's 10.13 type stubs. Read line by
    line: the generated stubs are not all valid Python (a default before a non-default argument)."""
    members: dict[str, set[str]] = {"tensorrt": set()}
    current = None
    for line in _read(_wheel(*STUBS), "tensorrt_bindings/tensorrt.pyi").decode().splitlines():
        if match := _CLASS.match(line):
            current = match[1]
            members["tensorrt"].add(current)
            members.setdefault(current, set())
        elif (match := _MEMBER.match(line)) and current:
            members[current].add(match[1] or match[2])
        elif match := _MODULE_LEVEL.match(line):
            current = None
            members["tensorrt"].add(match[1] or match[2])
    return members


@functools.lru_cache(maxsize=None)  # the parametrized test and the flags test read the same wheels
def bindings(version: str) -> tuple[frozenset[str], str]:
    """NUL-terminated printable strings of the compiled bindings (pybind11 names live there), and the
    package's __init__.py (the members it adds in Python)."""
    wheel = _wheel("tensorrt-cu12-bindings", version)
    blob = _read(wheel, "tensorrt_bindings/tensorrt.so")
    strings = frozenset(s.decode() for s in re.findall(rb"[\x20-\x7e]{2,}(?=\x00)", blob))
    return strings, _read(wheel, "tensorrt_bindings/__init__.py").decode()


def _in_strings(name: str, strings: frozenset[str]) -> bool:
    """The linker stores a string that ends another one inside it ("INT8" in "UINT8"): accept suffixes."""
    return name in strings or any(s.endswith(name) for s in strings)


def used_api() -> set[tuple[str, str]]:
    """(class, member) for every attribute the TensorRT code reads off a TensorRT object (see OBJECTS)."""
    used = set()
    for source in SOURCES:
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Attribute):
                continue
            owner = _owner(node.value)
            if owner:
                used.add((owner, node.attr))
    return used


def _owner(value: ast.AST) -> str | None:
    """The TensorRT class an expression holds: a known name, self.<known name>, or trt.<Class>."""
    if isinstance(value, ast.Name):
        return OBJECTS.get(value.id)
    if isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name):
        if value.value.id in ("self", "predictor"):  # self.context in the runner, predictor.context in gpu_check
            return OBJECTS.get(value.attr)
        if OBJECTS.get(value.value.id) == "tensorrt" and value.attr[:1].isupper():
            return value.attr
    if isinstance(value, ast.Attribute) and _owner(value.value) == "tensorrt" and value.attr[:1].isupper():
        return value.attr  # self.trt.<Class>
    return None


def test_the_scan_sees_the_tensorrt_calls():
    used = used_api()
    for expected in [("Builder", "build_serialized_network"), ("IExecutionContext", "execute_async_v3"),
                     ("IOptimizationProfile", "set_shape"), ("ICudaEngine", "get_tensor_profile_shape"),
                     ("BuilderFlag", "FP16"), ("tensorrt", "OnnxParser"), ("ParserError", "node_name"),
                     ("ITimingCache", "serialize"), ("IBuilderConfig", "builder_optimization_level")]:
        assert expected in used, (expected, sorted(used))


@pytest.mark.slow
def test_tensorrt_10_stubs_have_every_member_bilm_uses(trt10_stubs):
    aliases = {"Logger": "ILogger"}  # Logger's severities are copied from ILogger.Severity in __init__.py
    missing = [f"{cls}.{attr}" for cls, attr in sorted(used_api() - PYTHON_LEVEL)
               if attr not in trt10_stubs.get(cls, set()) | trt10_stubs.get(aliases.get(cls, ""), set())]
    assert not missing, f"not in the TensorRT {STUBS[1]} stubs: {missing}"


@pytest.mark.slow
@pytest.mark.parametrize("version", TRT10 + TRT11)
def test_tensorrt_bindings_have_every_member_bilm_uses(version):
    strings, init = bindings(version)
    assert "def nptype(" in init and "setattr(Logger, attr, value)" in init  # the PYTHON_LEVEL members
    gated = WEAK_TYPING_ONLY if version in TRT11 else set()  # only reached on TensorRT 10 (typing: weak)
    missing = [f"{cls}.{attr}" for cls, attr in sorted(used_api() - PYTHON_LEVEL - gated)
               if not (_in_strings(attr, strings) and _in_strings(cls, strings | {"tensorrt"}))]
    assert not missing, f"not in TensorRT {version}: {missing}"


@pytest.mark.slow
def test_builder_precision_flags_are_gone_in_tensorrt_11(trt10_stubs):
    """Why engine.typing resolves to "strong" on TensorRT 11 and refuses "weak" there."""
    assert {"FP16", "INT8"} <= trt10_stubs["BuilderFlag"]
    assert "STRONGLY_TYPED" in trt10_stubs["NetworkDefinitionCreationFlag"]
    for version in TRT10:
        assert "FP16" in bindings(version)[0]
    for version in TRT11:
        strings = bindings(version)[0]
        assert "FP16" not in strings, version
        assert "STRONGLY_TYPED" in strings  # still accepted in 11, and ignored: always strongly typed
        assert any("Strongly typed mode is always enabled" in s for s in strings), version
