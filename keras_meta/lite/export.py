"""Convert Keras models (such as `learner.adapt(...)` results) to `.tflite` files.

`export_model` puts the model's inference-mode call in a
`keras.export.ExportArchive` and converts it (`keras_meta.lite.converter`);
`LiteModel` runs the file in the LiteRT interpreter.

Example:

>>> import numpy as np, keras_meta
>>> from keras_meta import lite
>>> model = keras_meta.models.mlp((4,), hidden_units=(8,), num_outputs=3)
>>> content = lite.export_model(model)               # bytes; or export_model(model, "model.tflite")
>>> interpreter = lite.LiteModel(content)
>>> x = np.ones((2, 4), "float32")
>>> bool(np.allclose(interpreter.predict(x), model.predict(x, verbose=0), atol=1e-5))
True
"""

import keras
import tensorflow as tf

from keras_meta.lite import converter
from keras_meta.lite.conversion_errors import LiteConversionError
from keras_meta.lite.quantize import calibration, check_quantize


def input_specs(model, input_shape=None):
    """`tf.TensorSpec`s of the model's inputs, batch size dynamic."""
    if input_shape is not None:
        shapes = [input_shape] if isinstance(input_shape[0], (int, type(None))) else list(input_shape)
        return [tf.TensorSpec([None, *shape], tf.float32, name=f"x{i}" if len(shapes) > 1 else "x")
                for i, shape in enumerate(shapes)]
    inputs = getattr(model, "inputs", None)
    if not inputs:
        raise LiteConversionError(
            f"Model {model.name!r} has no symbolic inputs (a subclassed model?): pass `input_shape=` "
            "(the shape of one example, without the batch axis)."
        )
    return [tf.TensorSpec([None, *t.shape[1:]], t.dtype, name=f"x{i}" if len(inputs) > 1 else "x")
            for i, t in enumerate(inputs)]


def check_exportable(model):
    """Refuses what is not a plain model: learners (adapt them first) and unbuilt models."""
    from keras_meta.learners.base import MetaLearner

    if isinstance(model, MetaLearner):
        kind = type(model).__name__
        from keras_meta.learners import MAML, PrototypicalNetwork

        hint = ""
        if isinstance(model, PrototypicalNetwork):
            hint = ", or `lite.export_prototype_classifier(learner, ...)` to build prototypes on the device"
        elif isinstance(model, MAML):
            hint = ", or `lite.export_on_device_learner(learner, ...)` to adapt on the device"
        raise LiteConversionError(
            f"A {kind} takes episodes; export `learner.adapt(support_x, support_y)` (a plain Keras model){hint}."
        )
    if not isinstance(model, keras.Model) or not model.built:
        raise LiteConversionError(f"Expected a built keras.Model, got {type(model).__name__}.")
    return model


def export_model(model, path=None, quantize=None, representative_data=None, input_shape=None, allow_flex=False,
                 float_layers="head"):
    """Converts a Keras model (e.g. `learner.adapt(...)`) to TFLite; writes `path` when given, returns the bytes.

    Args:
        model: a built Keras model; its inference-mode outputs are exported.
        path: the `.tflite` file to write (None: only return the bytes).
        quantize: None, `"dynamic"`, `"float16"` or `"int8"` (see `converter.convert_archive`).
        representative_data: for int8, calibration inputs: an array `[n, ...]`
            of examples (e.g. `lite.representative_images(...)` from episodes)
            or a callable giving `{"x": batch}` dicts.
        input_shape: the shape of one example, for subclassed models without symbolic inputs.
        allow_flex: allow TensorFlow (Flex) ops for layers that have no builtin kernel.
        float_layers: with int8, the layers kept in float: `"head"` (default:
            the last layer with weights and the layers after it, whose logits
            decide the prediction; int8 logits lose the small differences
            between classes, e.g. of a prototype head `2 q.p - |p|^2`), a list
            of layer names, or `()` for a full-integer file.

    The file has one signature, `serving_default`, with input `x` (`x0`, `x1`,
    ... for several inputs; batch size dynamic) and output `output`
    (`output_0`, ... for several). int8 files keep float32 inputs and outputs.
    Raises `LiteConversionError` naming the layers that cannot be converted.
    """
    check_exportable(model)
    specs = input_specs(model, input_shape)
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(*inputs):
        outputs = model(inputs[0] if len(inputs) == 1 else list(inputs), training=False)
        if isinstance(outputs, (list, tuple)):
            return {f"output_{i}": o for i, o in enumerate(outputs)}
        if isinstance(outputs, dict):
            return dict(outputs)
        return {"output": outputs}

    archive.add_endpoint("serving_default", serve, input_signature=specs)
    dataset = None
    if check_quantize(quantize) == "int8":
        if representative_data is not None and not callable(representative_data) and len(specs) != 1:
            raise ValueError("Give a callable `representative_data` for models with several inputs.")
        dataset = calibration(representative_data, 1, lambda data, start: [{specs[0].name: data[start:start + 1]}])
    if float_layers == "head":
        weighted = [i for i, layer in enumerate(model.layers) if layer.weights]
        float_layers = [layer.name for layer in model.layers[weighted[-1]:]] if weighted else []
    content = converter.convert_archive(archive, ["serving_default"], quantize, dataset, allow_flex=allow_flex,
                                        model=model, float_layers=tuple(float_layers or ()))
    if path is not None:
        converter.write(path, content)
    return content
