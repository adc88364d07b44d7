"""The TFLite converter: a `keras.export.ExportArchive` in, `.tflite` bytes out, quantized as asked.

The archive is written to a SavedModel and converted by
`tf.lite.TFLiteConverter.from_saved_model`; the variables it tracks are
frozen into the file (or kept as resource variables, for on-device state).

Example:

>>> import keras, keras_meta
>>> from keras_meta.lite import converter
>>> model = keras_meta.models.mlp((4,), hidden_units=(8,), num_outputs=3)
>>> archive = keras.export.ExportArchive()
>>> archive.track(model)
>>> _ = archive.add_endpoint("serving_default", lambda x: {"output": model(x, training=False)},
...                          input_signature=[keras_meta.lite.export.input_specs(model)[0]])
>>> content = converter.convert_archive(archive, ["serving_default"], quantize="float16")
>>> content[4:8]
b'TFL3'
"""

import contextlib
import os
import tempfile
import warnings

import tensorflow as tf

from keras_meta.lite import conversion_errors, flatbuffer
from keras_meta.lite.quantize import check_quantize


@contextlib.contextmanager
def _quiet():
    """Silences the converter's deprecation warning about `tf.lite.Interpreter` (used for int8 calibration)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
        yield


def convert_archive(archive, signature_keys, quantize=None, representative_dataset=None, resource_variables=False,
                    allow_flex=False, model=None, int8_ops=None, float_layers=()):
    """Writes `archive` (a `keras.export.ExportArchive`) to a SavedModel and converts it: `.tflite` bytes.

    Args:
        archive: the archive, with every model and variable its endpoints use tracked.
        signature_keys: the endpoints that become the file's signatures.
        quantize: None (float32), `"dynamic"` (int8 weights, float activations),
            `"float16"` (float16 weights) or `"int8"` (int8 weights and
            activations, calibrated on `representative_dataset`).
        representative_dataset: for int8, a callable returning an iterator of
            `{input_name: array}` (one signature) or `(signature_key, {...})`.
        resource_variables: allow variables that the signatures assign (on-device state).
        allow_flex: allow TensorFlow (Flex, `SELECT_TF_OPS`) ops; such a file
            needs an interpreter linked with the Flex delegate.
        model: the Keras model behind the archive, to name unconvertible layers in errors.
        int8_ops: with int8, quantize only ops of these TFLite types (e.g.
            `{"CONV_2D", "MAX_POOL_2D"}`) and keep the others in float; None
            quantizes every op (full integer).
        float_layers: with int8, names of layers of `model` whose ops stay
            float (e.g. the logits layer).
    """
    quantize = check_quantize(quantize)
    with tempfile.TemporaryDirectory() as directory:
        archive.write_out(directory, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(directory, signature_keys=list(signature_keys))
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize == "dynamic":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        elif quantize == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "int8":
            if representative_dataset is None:
                raise ValueError("int8 quantization needs a `representative_dataset` (calibration inputs).")
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = representative_dataset
            if int8_ops is None and not float_layers:
                ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            else:  # calibrate here, quantize the selected ops below (as tf.lite.experimental.QuantizationDebugger)
                converter._experimental_calibrate_only = True
        if allow_flex:
            ops = ops + [tf.lite.OpsSet.SELECT_TF_OPS]
        converter.target_spec.supported_ops = ops
        if resource_variables:
            converter.experimental_enable_resource_variables = True
        try:
            with _quiet():
                content = converter.convert()
        except Exception as error:  # ConverterError and friends: name the ops and layers
            raise conversion_errors.conversion_error(error, model) from None
    if quantize == "int8" and (int8_ops is not None or float_layers):
        from tensorflow.lite.python import convert as tflite_convert

        denied = [] if int8_ops is None else sorted(set().union(*flatbuffer.op_types(content).values()) - set(int8_ops))
        content = tflite_convert.mlir_quantize(content, denylisted_ops=denied,
                                               denylisted_nodes=flatbuffer.nodes_of_layers(content, float_layers))
    return content


def write(path, content):
    """Writes `.tflite` bytes to `path` (its folder made if missing); returns `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "wb") as f:
        f.write(content)
    return path
