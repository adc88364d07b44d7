"""Quantization: calibration images drawn from episodes, and how far each variant is from the float model.

Variants (`quantize=` of every export function):

* `None`: float32, the reference;
* `"dynamic"`: int8 weights, float activations (about 4x smaller; tensors
  with fewer than 1024 values stay float);
* `"float16"`: float16 weights (about 2x smaller), float arithmetic;
* `"int8"`: int8 weights and activations, calibrated on a representative
  dataset; inputs and outputs stay float32.

Example:

>>> import numpy as np, keras_meta
>>> from keras_meta import lite
>>> images = np.random.rand(40, 8, 8, 1).astype("float32")
>>> labels = np.repeat(np.arange(8), 5)
>>> calibration = lite.representative_images(images, labels, ways=4, shots=1, queries=2, num_episodes=5)
>>> calibration.shape
(60, 8, 8, 1)
>>> model = keras_meta.models.mlp((8, 8, 1), hidden_units=(16,), num_outputs=4)
>>> report = lite.quantization_report(model, images[:10], calibration, quantizations=(None, "float16"))
>>> sorted(report["float16"])
['argmax_agreement', 'max_abs_diff', 'size_bytes']
"""

import numpy as np

from keras_meta.data import EpisodeSampler
from keras_meta.lite import export


def representative_images(images, labels, ways=5, shots=1, queries=5, num_episodes=20, seed=0, rotations=None):
    """The support and query images of `num_episodes` episodes: `[num_episodes * ways * (shots + queries), ...]`.

    Calibration data that looks like what the device sees: the episodes of
    an `EpisodeSampler(images, labels, ways, shots, queries, rotations=rotations)`.
    """
    sampler = EpisodeSampler(images, labels, ways=ways, shots=shots, queries=queries, rotations=rotations, seed=seed)
    batches = []
    for inputs, _ in sampler.dataset(batch_size=1, num_episodes=num_episodes):
        batches += [inputs["support_x"][0].numpy(), inputs["query_x"][0].numpy()]
    return np.concatenate(batches, axis=0).astype(np.float32)


def agreement(reference, outputs):
    """How close `outputs` (e.g. interpreter logits) are to `reference` (the Keras model's), both `[n, classes]`.

    Returns `{"max_abs_diff", "relative_diff", "argmax_agreement"}`, with
    `relative_diff = max_abs_diff / max(1, max |reference|)`.
    """
    reference, outputs = np.asarray(reference, np.float64), np.asarray(outputs, np.float64)
    if reference.shape != outputs.shape:
        raise ValueError(f"Shapes differ: reference {reference.shape}, outputs {outputs.shape}.")
    diff = float(np.max(np.abs(reference - outputs))) if reference.size else 0.0
    return {
        "max_abs_diff": diff,
        "relative_diff": diff / max(1.0, float(np.max(np.abs(reference))) if reference.size else 1.0),
        "argmax_agreement": float(np.mean(reference.argmax(-1) == outputs.argmax(-1))),
    }


def quantization_report(model, x, representative_data=None, quantizations=export.QUANTIZATIONS, directory=None):
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
        content = export.export_model(model, path, quantize=quantize, representative_data=representative_data)
        outputs = export.LiteModel(content).predict(x)
        scores = agreement(reference, outputs)
        report[name] = {"size_bytes": len(content), "max_abs_diff": scores["max_abs_diff"],
                        "argmax_agreement": scores["argmax_agreement"]}
    return report
