"""PyTorch on a CUDA device, timed with CUDA events: the baseline a GPU user without TensorRT has.

`cuda_seconds` times one call alone (synchronised on both sides: evaluate/bench's clock for the
`pytorch-cuda-*` rows); `cuda_event_times` records a series back to back (gpu_check's steady state).

A leaf: numpy at import, torch inside the functions, nothing from export/ or training. Used by
scripts/gpu_check.py; evaluate/bench may use it for their `pytorch-cuda-*` rows.

Timing: each call sits between two CUDA events on the current stream, after a device synchronisation, so the
figures are GPU time per call (kernels and launch gaps), not host time. The variants:
- `fp16`, `bf16`: the model's weights cast to that dtype, eager, SDPA attention where the family has it.
- `fp16-compile-cudagraphs`: `torch.compile(mode="reduce-overhead", dynamic=False)`, Inductor kernels replayed
  as one CUDA graph per shape, which removes the per-kernel launch cost that dominates batch 1.
"""
from __future__ import annotations

from typing import Any, Callable

VARIANTS = ("fp16", "bf16", "fp16-compile-cudagraphs")

# dense (no sparsity) tensor-core peak, FLOP/s, from NVIDIA's data sheets; matched against the device name
PEAK_BF16_FLOPS = (("H200", 989e12), ("H100 PCIe", 756e12), ("H100", 989e12), ("H800", 989e12),
                   ("GH200", 989e12), ("B200", 2250e12), ("A100", 312e12), ("A800", 312e12), ("L40S", 362e12),
                   ("L40", 181e12), ("L4", 121e12), ("A10G", 70e12), ("A10", 125e12), ("RTX 4090", 165e12),
                   ("RTX 3090", 71e12))


def peak_bf16_flops(device_name: str) -> float | None:
    """The data-sheet dense bf16 peak of a GPU by name (H100 PCIe before H100), or None if unknown."""
    for key, flops in PEAK_BF16_FLOPS:
        if key.lower() in device_name.lower():
            return flops
    return None


def cuda_seconds(fn: Callable[[], Any]) -> float:
    """GPU seconds of one call, from CUDA events recorded around it after a synchronisation (so no earlier
    work is counted) and read after the end event completes (so all of the call's work is)."""
    import torch

    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def cuda_event_times(fn: Callable[[], Any], iterations: int, warmup: int) -> list[float]:
    """Seconds per call of `fn` on the current CUDA stream: `warmup` untimed calls, a synchronisation, then
    each call between two CUDA events; read after a final synchronisation."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(iterations)]
    for begin, end in events:
        begin.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return [begin.elapsed_time(end) / 1e3 for begin, end in events]


def prepare_variant(model, variant: str):
    """A callable `model(**feed)` for `variant` (see VARIANTS) on the model's CUDA device."""
    import torch

    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    dtype = torch.bfloat16 if variant == "bf16" else torch.float16
    model = model.to(dtype=dtype).eval()
    if variant.endswith("compile-cudagraphs"):
        torch._dynamo.reset()  # a fresh cache: one static graph per shape, no dynamic-shape recompiles
        return torch.compile(model, mode="reduce-overhead", dynamic=False)
    return model


def time_forward(model, feed: dict, iterations: int, warmup: int) -> list[float]:
    """Seconds per forward pass of `model(**feed)` under inference_mode, CUDA-event timed."""
    import torch

    def call():
        with torch.inference_mode():
            return model(**feed)

    if hasattr(torch.compiler, "cudagraph_mark_step_begin"):
        def step():  # tells the CUDA-graph runner that the previous outputs may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
            return call()
        return cuda_event_times(step, iterations, warmup)
    return cuda_event_times(call, iterations, warmup)


def synthetic_batch(batch: int, seq: int, vocab: int) -> dict[str, "np.ndarray"]:
    """Random token ids (seeded by the shape) with a full attention mask: latency needs shapes, not text."""
    import numpy as np

    ids = np.random.default_rng(seq * 1000 + batch).integers(10, vocab, (batch, seq), dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
