"""Serving bilm folders on Triton Inference Server.

- `pipeline.serve.server`: `bilm serve`, a real Triton server started with PyTriton; each folder runs through the
  `pipeline.runtime` Predictor interface.
- `pipeline.serve.repository`: `bilm export triton`, a model repository (tokenizer + network + ensemble) that the
  stock Triton container serves without bilm.
- `pipeline.serve.loadtest`: `bilm loadtest`, concurrent requests from tritonclient's asyncio clients.

A leaf package: it imports `pipeline.runtime` (and the leaf modules `pipeline.errors`, `pipeline.io`), never
export/ or training code, and torch only where a folder needs the TensorRT runner. PyTriton and tritonclient
(the `serve` extra) are imported inside functions, so `import pipeline.serve` works without them.
"""
