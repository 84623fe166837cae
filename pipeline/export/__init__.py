"""Export to ONNX (`onnx`), the TensorRT-compatibility lint (`lint`) and the `bilm export` / `bilm predict`
commands (`commands`).

Nothing is imported here: `pipeline.export.commands` must load where torch is not installed, and importing
this package is a step of importing it.
"""
