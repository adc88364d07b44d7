"""`quantization_report`: each quantization variant of a model exported and compared with the Keras model.

Example:

>>> import numpy as np, keras_meta
>>> from keras_meta import lite
>>> model = keras_meta.models.mlp((4,), hidden_units=(8,), num_outputs=3)
>>> x = np.random.rand(10, 4).astype("float32")
>>> report = lite.quantization_report(model, x, quantizations=(None, "float16"))
>>> sorted(report), report["float16"]["argmax_agreement"]
(['float16', 'float32'], 1.0)
"""

from keras_meta.lite.export import export_model
from keras_meta.lite.interpreter import LiteModel
from keras_meta.lite.quantize import QUANTIZATIONS, agreement


def quantization_report(model, x, representative_data=None, quantizations=QUANTIZATIONS, directory=None):
    """Exports `model` in each variant and compares the interpreter's outputs on `x` with the Keras model's.

    Returns `{variant: {"size_bytes", "max_abs_diff", "argmax_agreement"}}`
    with variant `"float32"` for None. `representative_data` calibrates int8;
    `directory` keeps the files (`model_<variant>.tflite`).
    """
    reference = model.predict(x, verbose=0)
    report = {}
    for quantize in quantizations:
        name = quantize or "float32"
        path = None if directory is None else f"{directory}/model_{name}.tflite"
        content = export_model(model, path, quantize=quantize, representative_data=representative_data)
        outputs = LiteModel(content).predict(x)
        scores = agreement(reference, outputs)
        report[name] = {"size_bytes": len(content), "max_abs_diff": scores["max_abs_diff"],
                        "argmax_agreement": scores["argmax_agreement"]}
    return report
