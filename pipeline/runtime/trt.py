"""TensorRT predictor: a serialized engine behind the same `Predictor` interface as ONNX Runtime.

Reads an engine folder written by `pipeline.export.tensorrt` (engine file + engine.json + config.json +
tokenizer files). tensorrt and torch (for CUDA buffers and the stream) are imported when a predictor is made,
never at module import, so this module loads anywhere.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.runtime.base import Predictor
from pipeline.runtime.text import PredictorError, read_json_file
from pipeline.trt_common import (INPUTS, EngineError, Profile, compat_problem, compute_capability, pad_to_profile,
                                 pick_profile, unavailable_reason)


def _imports(device: int):
    reason = unavailable_reason(device)
    if reason:
        raise PredictorError(f"the TensorRT predictor cannot run here: {reason}")
    import tensorrt as trt
    import torch

    return trt, torch


class TrtPredictor(Predictor):
    """Logits from a TensorRT engine. Device buffers are allocated once per optimization profile, at its max
    shape; each call selects the profile, sets the input shapes and runs `execute_async_v3` on one stream."""

    def __init__(self, folder: str | Path, device: int = 0):
        super().__init__(folder)
        self.record = read_json_file(self.folder / "engine.json", "TensorRT engine record")
        if "engines" in self.record:  # the family summary, not one precision's folder
            raise PredictorError(f"{self.folder} holds the engines of a family; pass one precision's folder, "
                                 f"e.g. {self.folder / 'fp16'}")
        trt, torch = _imports(device)
        self.trt, self.torch, self.device = trt, torch, device
        self.engine = self._load_engine()
        self.context = self.engine.create_execution_context()
        self.inputs, self.outputs = self._io_names()
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in self.inputs + self.outputs}
        self.profiles = self._profiles()
        self.stream = torch.cuda.Stream(device=device)
        self.buffers = [self._allocate(i) for i in range(len(self.profiles))]
        self.active: int | None = None
        self._cap_encoder()

    # --- loading ---------------------------------------------------------------------------------------
    def _load_engine(self):
        name = self.record.get("engine")
        path = self.folder / name if name else None
        if path is None or not path.is_file():
            raise PredictorError(f"{self.folder} has no engine file {name!r}; build it with "
                                 f"`bilm export trt ONNX_DIR OUT_DIR`")
        major, minor = self.torch.cuda.get_device_capability(self.device)
        problem = compat_problem(self.record, self.trt.__version__, compute_capability(major, minor))
        if problem:
            raise PredictorError(f"{path.name} cannot run here: {problem}. TensorRT engines are tied to one "
                                 f"TensorRT release and GPU architecture: rebuild it on this machine with "
                                 f"`bilm export trt` (or `dvc repro -f -s engine@{self.record.get('family')}`)")
        self.torch.cuda.set_device(self.device)
        runtime = self.trt.Runtime(self.trt.Logger(self.trt.Logger.WARNING))
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise PredictorError(f"TensorRT {self.trt.__version__} could not deserialize {path} (corrupt, or "
                                 f"built by another TensorRT/GPU); rebuild it with `bilm export trt`")
        return engine

    def _io_names(self) -> tuple[list[str], list[str]]:
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == self.trt.TensorIOMode.INPUT]
        unknown = sorted(set(inputs) - set(INPUTS))
        if unknown:
            raise PredictorError(f"the engine wants inputs {unknown}, which a text classifier cannot feed")
        return inputs, [n for n in names if n not in inputs]

    def _profiles(self) -> list[Profile]:
        """[(min, opt, max) batch and sequence] per profile, as built into the engine."""
        out = []
        for p in range(self.engine.num_optimization_profiles):
            lo, opt, hi = (tuple(d) for d in self.engine.get_tensor_profile_shape(self.inputs[0], p))
            out.append(Profile((lo[0], opt[0], hi[0]), (lo[1], opt[1], hi[1])))
        return out

    def _allocate(self, index: int) -> dict[str, Any]:
        """Flat device buffers holding each I/O tensor at profile `index`'s max shape."""
        max_b, max_s = self.profiles[index].batch[2], self.profiles[index].sequence[2]
        buffers = {}
        for name in self.inputs + self.outputs:
            dims = list(self.engine.get_tensor_shape(name))  # e.g. [-1, -1] inputs, [-1, num_labels] logits
            size = int(np.prod([max_b if i == 0 and d < 0 else max_s if d < 0 else d for i, d in enumerate(dims)]))
            dtype = self.torch.from_numpy(np.zeros(0, self.dtypes[name])).dtype
            buffers[name] = self.torch.empty(size, dtype=dtype, device=f"cuda:{self.device}")
        return buffers

    def _cap_encoder(self) -> None:
        """Truncate texts at the longest sequence any profile takes (else long texts would be refused)."""
        longest = max(p.sequence[2] for p in self.profiles)
        if longest < self.encoder.max_length:
            self.encoder.max_length = longest
            self.encoder.tokenizer.enable_truncation(longest)

    # --- running ---------------------------------------------------------------------------------------
    def predict_logits(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return self.run(batch)

    def run(self, batch: dict[str, np.ndarray], profile: int | None = None) -> np.ndarray:
        """Logits of a [b, s] batch on `profile` (default: the first that holds it; see pick_profile)."""
        b, s = batch["input_ids"].shape
        try:
            index = pick_profile(self.profiles, b, s) if profile is None else profile
        except EngineError as exc:
            raise PredictorError(str(exc)) from None
        chosen = self.profiles[index]
        if b > chosen.batch[2] or s > chosen.sequence[2]:
            raise PredictorError(f"profile {index} ({chosen.to_dict()}) does not hold a batch of {b} x {s}")
        fed = pad_to_profile(batch, chosen, self.encoder.pad_id, self.encoder.pad_type_id,
                             left=self.encoder.padding_side == "left")
        torch = self.torch
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            if index != self.active:
                if not self.context.set_optimization_profile_async(index, self.stream.cuda_stream):
                    raise PredictorError(f"TensorRT refused optimization profile {index}")
                self.active = index
            self._bind_inputs(fed, self.buffers[index])
            outputs = self._bind_outputs(self.buffers[index])
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise PredictorError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
            logits = outputs[self.outputs[0]].cpu()  # a copy on this stream; waits for the result
        self.stream.synchronize()
        return logits.numpy().astype(np.float32, copy=False)[:b]

    def _bind_inputs(self, fed: dict[str, np.ndarray], buffers: dict[str, Any]) -> None:
        for name in self.inputs:
            # int64 -> int32 (or whatever the engine's input type is) on the host, before the copy
            host = self.torch.from_numpy(np.ascontiguousarray(fed[name].astype(self.dtypes[name], copy=False)))
            view = buffers[name][: host.numel()].view(host.shape)
            view.copy_(host)
            if not self.context.set_input_shape(name, tuple(host.shape)):
                raise PredictorError(f"TensorRT refused input shape {tuple(host.shape)} for {name}")
            self.context.set_tensor_address(name, view.data_ptr())

    def _bind_outputs(self, buffers: dict[str, Any]) -> dict[str, Any]:
        views = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))  # resolved from the input shapes just set
            views[name] = buffers[name][: int(np.prod(shape))].view(shape)
            self.context.set_tensor_address(name, views[name].data_ptr())
        return views
