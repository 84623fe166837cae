"""Triton Python backend: logits [-1, n_labels] -> probabilities (softmax, FP32) and label (BYTES [-1, 1]).

Label names come from the model folder's labels.txt (one per line, in id order), the file that config.pbtxt
also names as label_filename for Triton's classification extension.
"""
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        lines = (Path(args["model_repository"]) / "labels.txt").read_text(encoding="utf-8").splitlines()
        self.labels = np.array([line.encode("utf-8") for line in lines], dtype=object)

    def execute(self, requests):
        responses = []
        for request in requests:
            logits = pb_utils.get_input_tensor_by_name(request, "logits").as_numpy().astype(np.float32)
            shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
            probs = shifted / shifted.sum(axis=-1, keepdims=True)
            labels = self.labels[probs.argmax(axis=-1)].reshape(-1, 1)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("probabilities", probs),
                                                         pb_utils.Tensor("label", labels)]))
        return responses
