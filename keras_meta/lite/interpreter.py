"""`LiteModel`: a `.tflite` file in the LiteRT interpreter (`ai_edge_litert`), called by signature.

Example:

>>> import numpy as np, keras_meta
>>> from keras_meta import lite
>>> model = keras_meta.models.mlp((4,), hidden_units=(8,), num_outputs=3)
>>> device = lite.LiteModel(lite.export_model(model))
>>> device.predict(np.ones((5, 4), "float32")).shape
(5, 3)
"""

import os
import time

import numpy as np


class LiteModel:
    """A `.tflite` file (path or bytes) in the LiteRT interpreter, called by signature.

    `lite_model.run("classify", x=..., prototypes=...)` returns a dict of
    numpy outputs; `predict(x)` runs the single-input, single-output
    signature in batches; `size` is the file size in bytes. Inputs of a
    dynamic size (batch, support set) are resized on each call.
    """

    def __init__(self, model, num_threads=None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise ImportError('keras_meta.lite.LiteModel runs files in the LiteRT interpreter, which needs '
                              'ai-edge-litert: install it with `pip install "keras-meta[lite]"`.') from None

        if isinstance(model, (str, os.PathLike)):
            with open(model, "rb") as f:
                model = f.read()
        self.content = bytes(model)
        self.interpreter = Interpreter(model_content=self.content, num_threads=num_threads)
        self.signatures = self.interpreter.get_signature_list()
        self._runners = {}

    @property
    def size(self):
        return len(self.content)

    def runner(self, signature=None):
        if signature is None:
            if len(self.signatures) != 1:
                raise ValueError(f"This file has several signatures; name one of {sorted(self.signatures)}.")
            signature = next(iter(self.signatures))
        if signature not in self.signatures:
            raise ValueError(f"No signature {signature!r} in this file; it has {sorted(self.signatures)}.")
        if signature not in self._runners:
            self._runners[signature] = self.interpreter.get_signature_runner(signature)
        return self._runners[signature]

    def input_details(self, signature=None):
        return self.runner(signature).get_input_details()

    def run(self, signature=None, **inputs):
        """Runs one signature; inputs are cast to the signature's dtypes. Returns `{name: array}`."""
        runner = self.runner(signature)
        details = runner.get_input_details()
        missing = set(details) - set(inputs)
        if missing or set(inputs) - set(details):
            raise ValueError(f"Signature {signature!r} takes inputs {sorted(details)}, got {sorted(inputs)}.")
        feed = {name: np.asarray(value, dtype=details[name]["dtype"]) for name, value in inputs.items()}
        return {name: np.array(value) for name, value in runner(**feed).items()}

    def predict(self, x, batch_size=32, signature=None):
        """Outputs of a single-input, single-output signature over `x`, in batches."""
        runner = self.runner(signature)
        (name,) = runner.get_input_details()
        outputs = [next(iter(self.run(signature, **{name: x[i:i + batch_size]}).values()))
                   for i in range(0, len(x), batch_size)]
        return np.concatenate(outputs, axis=0)

    def latency(self, signature=None, repeats=50, **inputs):
        """Median seconds of one call of `signature` with `inputs` (after a warm-up call)."""
        self.run(signature, **inputs)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            self.run(signature, **inputs)
            times.append(time.perf_counter() - start)
        return float(np.median(times))
