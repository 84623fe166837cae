"""What TensorRT's builder (pipeline/export/tensorrt.py) and runner (pipeline/runtime/trt.py) share: a leaf.

Optimization profiles, engine names, the TensorRT-release/GPU compatibility check and the "can TensorRT run
here" probe. The builder and the runner both import this module, and neither imports the other, as
Polygraphy keeps its loaders apart from its runners. Imports numpy and pipeline.errors only; torch and
tensorrt are imported inside the functions that need them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pipeline.errors import BilmError

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
MIN_SEQUENCE = 4  # a text encodes to at least its special tokens plus one or two tokens
ENGINE_SUFFIX = ".engine"


class EngineError(BilmError, RuntimeError):
    """An engine that cannot be built or used; the message names the problem and the fix."""


@dataclass(frozen=True)
class Profile:
    """(min, opt, max) batch and sequence of one optimization profile."""

    batch: tuple[int, int, int]
    sequence: tuple[int, int, int]

    def shapes(self) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        """[batch, sequence] of every input at min, opt and max."""
        return tuple((b, s) for b, s in zip(self.batch, self.sequence))  # type: ignore[return-value]

    def contains(self, batch: int, seq: int) -> bool:
        return self.batch[0] <= batch <= self.batch[2] and self.sequence[0] <= seq <= self.sequence[2]

    def to_dict(self) -> dict[str, list[int]]:
        return {"batch": list(self.batch), "sequence": list(self.sequence)}

    @classmethod
    def from_dict(cls, d: dict[str, Sequence[int]]) -> "Profile":
        return cls(tuple(d["batch"]), tuple(d["sequence"]))  # type: ignore[arg-type]


def pick_profile(profiles: Sequence[Profile], batch: int, seq: int) -> int:
    """Index of the profile to run [batch, seq] with: the first that holds it as is, else the first whose max
    holds it (the input is then padded up to that profile's min); an EngineError if none does."""
    fits = [i for i, p in enumerate(profiles) if batch <= p.batch[2] and seq <= p.sequence[2]]
    if not fits:
        max_batch = max(p.batch[2] for p in profiles)
        max_seq = max(p.sequence[2] for p in profiles)
        raise EngineError(f"a batch of {batch} x {seq} tokens is larger than every optimization profile of this "
                          f"engine (largest: batch {max_batch}, sequence {max_seq}); classify with batch_size <= "
                          f"{max_batch}, or rebuild with engine.profiles max_batch / max_sequence raised")
    exact = [i for i in fits if profiles[i].contains(batch, seq)]
    return (exact or fits)[0]


def pad_columns(batch: dict[str, np.ndarray], seq: int, pad_id: int, pad_type_id: int,
                left: bool) -> dict[str, np.ndarray]:
    """[b, s] inputs padded to [b, seq] on the tokenizer's side (XLNet: left) with its pad and segment ids;
    new positions are masked, so the logits stay the same."""
    cols = seq - batch["input_ids"].shape[1]
    if cols <= 0:
        return dict(batch)
    fill = {"input_ids": pad_id, "attention_mask": 0, "token_type_ids": pad_type_id}
    widths = ((0, 0), (cols, 0) if left else (0, cols))
    return {name: np.pad(value, widths, constant_values=fill.get(name, 0)) for name, value in batch.items()}


def pad_to_profile(batch: dict[str, np.ndarray], profile: Profile, pad_id: int, pad_type_id: int,
                   left: bool) -> dict[str, np.ndarray]:
    """Pad [b, s] inputs up to the profile's min batch and sequence. Extra positions are masked (same
    logits); extra rows repeat the first row (a fully masked row can turn into NaN in fp16), and the caller
    drops their logits."""
    out = pad_columns(batch, profile.sequence[0], pad_id, pad_type_id, left)
    rows = max(0, profile.batch[0] - batch["input_ids"].shape[0])
    if rows:
        out = {name: np.concatenate([value, np.repeat(value[:1], rows, axis=0)]) for name, value in out.items()}
    return out


# --- naming and compatibility --------------------------------------------------------------------------
_NAME = re.compile(r"^(?P<family>[a-z0-9_]+)-(?P<precision>[a-z0-9]+)-trt(?P<trt>[0-9.]+)-sm(?P<sm>[0-9]+)"
                   + re.escape(ENGINE_SUFFIX) + "$")


def compute_capability(major: int, minor: int) -> str:
    return f"sm{major}{minor}"


def engine_name(family: str, precision: str, trt_version: str, capability: str) -> str:
    """`bert-fp16-trt10.13.0-sm90.engine`: an engine runs only on this TensorRT version and GPU architecture."""
    version = ".".join(trt_version.split(".")[:3])
    return f"{family}-{precision}-trt{version}-{capability}{ENGINE_SUFFIX}"


def parse_engine_name(name: str) -> dict[str, str] | None:
    match = _NAME.match(Path(name).name)
    if not match:
        return None
    return {"family": match["family"], "precision": match["precision"], "tensorrt": match["trt"],
            "capability": f"sm{match['sm']}"}


def compat_problem(record: dict[str, Any], trt_version: str, capability: str) -> str | None:
    """Why an engine (its engine.json record, else its file name) cannot run here; None if it can.

    TensorRT plans are tied to the exact TensorRT release (major.minor.patch) and the GPU architecture."""
    built_trt = record.get("tensorrt") or (parse_engine_name(record.get("engine", "")) or {}).get("tensorrt")
    built_cc = record.get("capability") or (parse_engine_name(record.get("engine", "")) or {}).get("capability")
    if not built_trt or not built_cc:
        return "its engine.json records neither the TensorRT version nor the GPU it was built for"
    here, there = trt_version.split(".")[:3], str(built_trt).split(".")[:3]
    problems = []
    if here != there:
        problems.append(f"built with TensorRT {built_trt}, this is TensorRT {trt_version}")
    if built_cc != capability:
        problems.append(f"built for GPU {built_cc}, this GPU is {capability}")
    return "; ".join(problems) or None


# --- where TensorRT can run ----------------------------------------------------------------------------
def cuda_unavailable_reason(device: int = 0) -> str | None:
    """"no CUDA device: ..." when torch sees no GPU `device` (or there is no torch), else None."""
    try:
        import torch
    except ImportError:
        return "no CUDA device: torch is not installed, and bilm allocates GPU buffers with torch.cuda"
    if not torch.cuda.is_available():
        cpu_only = " (this torch is a CPU-only build)" if torch.version.cuda is None else ""
        return f"no CUDA device: torch {torch.__version__} sees no GPU{cpu_only}"
    if device >= torch.cuda.device_count():
        return f"no CUDA device {device}: only {torch.cuda.device_count()} visible; set engine.device"
    return None


def tensorrt_unavailable_reason() -> str | None:
    """Why `import tensorrt` fails here (not installed, or its libraries missing), else None."""
    try:
        import tensorrt  # noqa: F401
    except (ImportError, OSError) as exc:  # OSError: the wheel is there but its libraries are not
        return (f"TensorRT not installed ({type(exc).__name__}: {str(exc)[:120]}); "
                f"bash scripts/install.sh --gpu on a CUDA machine")
    return None


def unavailable_reason(device: int = 0) -> str | None:
    """Why no engine can be built or run here ("no CUDA device", "TensorRT not installed"), or None."""
    reasons = [r for r in (cuda_unavailable_reason(device), tensorrt_unavailable_reason()) if r]
    return "; ".join(reasons) or None
