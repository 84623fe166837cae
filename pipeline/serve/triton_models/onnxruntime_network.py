"""Triton Python backend: the network run by ONNX Runtime (CPU), for a tritonserver that lacks the
onnxruntime backend (PyTriton's bundled server has only the Python backend). Same inputs and outputs as the
`onnxruntime_onnx` model it stands in for; model.onnx lies next to this file."""
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        options = ort.SessionOptions()
        options.add_session_config_entry("session.set_denormal_as_zero", "1")  # as bilm's sessions: runtime/ort.py
        threads = config.get("parameters", {}).get("intra_op_threads", {}).get("string_value")
        if threads:
            options.intra_op_num_threads = int(threads)
        # graph transformers the folder's export.json asked CPU sessions to skip (bilm serve writes them here)
        disabled = config.get("parameters", {}).get("disabled_optimizers", {}).get("string_value", "")
        self.session = ort.InferenceSession(str(Path(__file__).parent / "model.onnx"), options,
                                            providers=["CPUExecutionProvider"],
                                            disabled_optimizers=[n for n in disabled.split(",") if n] or None)
        self.inputs = [i["name"] for i in config["input"]]
        self.output = config["output"][0]["name"]

    def execute(self, requests):
        responses = []
        for request in requests:
            feed = {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.inputs}
            logits = self.session.run([self.output], feed)[0].astype(np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(self.output, logits)]))
        return responses
