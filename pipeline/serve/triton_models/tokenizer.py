"""Triton Python backend: text (BYTES [-1, 1]) -> the network's token inputs, padded to a fixed length bucket.

Reads tokenizer.json next to this file; the rest comes from config.pbtxt parameters written by bilm: the
inputs and their types, max_length, buckets, padding side and pad ids. Triton batches only requests whose
inputs have one shape, so every batch is padded to the smallest bucket that holds its longest text, not to
its own longest text. Texts longer than max_length tokens are truncated.
"""
import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.max_length = int(params["max_length"])
        self.buckets = sorted(int(b) for b in params["buckets"].split(",") if int(b) <= self.max_length)
        self.left = params["padding_side"] == "left"
        self.pad_id, self.pad_type_id = int(params["pad_id"]), int(params["pad_type_id"])
        self.outputs = {o["name"]: pb_utils.triton_string_to_numpy(o["data_type"]) for o in config["output"]}
        self.tokenizer = Tokenizer.from_file(str(Path(__file__).parent / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_length)

    def execute(self, requests):
        responses = []
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, "text").as_numpy().reshape(-1)
            try:
                texts = [item.decode("utf-8") for item in raw]
            except UnicodeDecodeError as exc:
                error = pb_utils.TritonError(f"text is not valid UTF-8 ({exc.reason} at byte {exc.start})")
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
                continue
            arrays = self.pad(self.tokenizer.encode_batch(texts))
            responses.append(pb_utils.InferenceResponse(
                [pb_utils.Tensor(name, arrays[name].astype(dtype)) for name, dtype in self.outputs.items()]))
        return responses

    def pad(self, encodings):
        longest = max(len(e.ids) for e in encodings)
        length = next((b for b in self.buckets if b >= longest), self.max_length)
        ids = np.full((len(encodings), length), self.pad_id, dtype=np.int64)
        types = np.full((len(encodings), length), self.pad_type_id, dtype=np.int64)
        mask = np.zeros((len(encodings), length), dtype=np.int64)
        for row, e in enumerate(encodings):
            cols = slice(length - len(e.ids), length) if self.left else slice(0, len(e.ids))
            ids[row, cols], types[row, cols], mask[row, cols] = e.ids, e.type_ids, 1
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
