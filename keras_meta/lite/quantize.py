"""Quantization: its variants, calibration data drawn from episodes, and how close two sets of outputs are.

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
from keras_meta.data.episode_format import QUERY_X, SUPPORT_X

QUANTIZATIONS = (None, "dynamic", "float16", "int8")
"""The values of `quantize`: None (float32), dynamic-range, float16 or int8 quantization."""


def check_quantize(quantize):
    """`quantize` as one of `QUANTIZATIONS` (`"none"`, `"float32"` and `"float"` mean None), or a `ValueError`."""
    if quantize in ("none", "float32", "float"):
        quantize = None
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"`quantize` must be one of {QUANTIZATIONS}, got {quantize!r}.")
    return quantize


def calibration(data, chunk_size, samples):
    """The converter's `representative_dataset` for int8, from an array of typical inputs.

    `data` is cut into chunks of `chunk_size` examples; `samples(data, start)`
    gives the converter samples (`{input: array}` or `(signature, {...})`) of
    the chunk that begins at `start`. A callable `data` is already a
    representative dataset and is returned as is.
    """
    if data is None:
        raise ValueError("int8 quantization needs `representative_data`: an array of typical inputs "
                         "(e.g. `lite.representative_images(images, labels)`), 100 or more examples.")
    if callable(data):
        return data
    data = np.asarray(data, np.float32)
    if len(data) < chunk_size:
        raise ValueError(f"int8 calibration draws {chunk_size} example{'s' if chunk_size != 1 else ''} at a time, but "
                         f"`representative_data` has {len(data)}; give 100 or more typical inputs.")

    def generate():
        for start in range(0, len(data) - chunk_size + 1, chunk_size):
            yield from samples(data, start)

    return generate


def representative_images(images, labels, ways=5, shots=1, queries=5, num_episodes=20, seed=0, rotations=None):
    """The support and query images of `num_episodes` episodes: `[num_episodes * ways * (shots + queries), ...]`.

    Calibration data that looks like what the device sees: the episodes of
    an `EpisodeSampler(images, labels, ways, shots, queries, rotations=rotations)`.
    """
    sampler = EpisodeSampler(images, labels, ways=ways, shots=shots, queries=queries, rotations=rotations, seed=seed)
    batches = []
    for inputs, _ in sampler.dataset(batch_size=1, num_episodes=num_episodes):
        batches += [inputs[SUPPORT_X][0].numpy(), inputs[QUERY_X][0].numpy()]
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
