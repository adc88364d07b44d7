"""Convert Keras models (such as `learner.adapt(...)` results) to `.tflite` files.

Keras 3 models go through a SavedModel written by `keras.export.ExportArchive`
and TensorFlow's `tf.lite.TFLiteConverter.from_saved_model`; the variables are
tracked by the archive, so their values are frozen into the file. `LiteModel`
runs a file in the LiteRT interpreter (`ai_edge_litert`).

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

import contextlib
import os
import re
import tempfile
import time
import warnings

import keras
import numpy as np
import tensorflow as tf

QUANTIZATIONS = (None, "dynamic", "float16", "int8")
"""The values of `quantize`: None (float32), dynamic-range, float16 or int8 quantization."""


class LiteConversionError(ValueError):
    """A model, or one of its layers, cannot be converted to a `.tflite` file."""


# -- conversion ---------------------------------------------------------------


def check_quantize(quantize):
    if quantize in ("none", "float32", "float"):
        quantize = None
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"`quantize` must be one of {QUANTIZATIONS}, got {quantize!r}.")
    return quantize


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
            raise conversion_error(error, model) from None
    if quantize == "int8" and (int8_ops is not None or float_layers):
        from tensorflow.lite.python import convert as tflite_convert

        denied = [] if int8_ops is None else sorted(set().union(*op_types(content).values()) - set(int8_ops))
        content = tflite_convert.mlir_quantize(content, denylisted_ops=denied,
                                               denylisted_nodes=nodes_of_layers(content, float_layers))
    return content


def nodes_of_layers(content, layer_names):
    """Names of the ops of a `.tflite` file that belong to the layers `layer_names` (by tensor name scopes).

    An op belongs to a layer when its output, or one of its constant inputs
    (the layer's weights), is named in that layer's scope.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    if not layer_names:
        return []
    patterns = [re.compile(re.escape(name) + r"(_\d+)?") for name in layer_names]

    def in_layer(name):
        parts = [part for piece in name.split(";") for part in piece.split("/")]
        return any(pattern.fullmatch(part) for pattern in patterns for part in parts)

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    nodes = []
    for subgraph in model.subgraphs:
        names = [t.name.decode() if isinstance(t.name, bytes) else t.name for t in subgraph.tensors]
        for op in subgraph.operators or []:
            inputs = [names[i] for i in op.inputs if i >= 0]
            outputs = [names[i] for i in op.outputs if i >= 0]
            if any(in_layer(name) for name in inputs + outputs):
                nodes += [name for name in outputs if name not in nodes]
    return nodes


def op_types(content):
    """`{signature: set of TFLite op type names}` of a `.tflite` file."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    names = {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    codes = [names.get(max(c.builtinCode, c.deprecatedBuiltinCode), "CUSTOM") for c in model.operatorCodes]
    result = {}
    for signature in model.signatureDefs or []:
        key = signature.signatureKey.decode() if isinstance(signature.signatureKey, bytes) else signature.signatureKey
        subgraph = model.subgraphs[signature.subgraphIndex]
        result[key] = {codes[op.opcodeIndex] for op in subgraph.operators or []}
    return result


_LOCATION = re.compile(r'fused\["(\w+):", "([^"@]*)@')
_SELECT = re.compile(r"(?:TF Select ops|Custom ops): ([\w, ]+)")
_NEITHER = re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op")


def unsupported_ops(message):
    """`{op: [name scopes]}` of the TensorFlow ops a converter error message says it could not convert."""
    ops = {}
    for match in _SELECT.finditer(message):
        for op in match.group(1).split(","):
            if op.strip():
                ops.setdefault(op.strip(), [])
    for match in _NEITHER.finditer(message):
        ops.setdefault(match.group(1), [])
    for op, scope in _LOCATION.findall(message):
        if op in ops:
            ops[op].append(scope)
    return ops


def layers_of_scopes(model, scopes):
    """Names of the layers of `model` whose name scopes appear in `scopes` (deepest match per scope)."""
    if model is None:
        return []
    names = [layer.name for layer in model._flatten_layers(include_self=False)]
    found = []
    for scope in scopes:
        hit = None
        for part in scope.split("/"):
            for name in names:
                if re.fullmatch(re.escape(name) + r"(_\d+)?", part):
                    hit = name
        if hit and hit not in found:
            found.append(hit)
    return found


def conversion_error(error, model=None):
    """A `LiteConversionError` naming the unsupported ops and the layers that use them."""
    message = str(error)
    ops = unsupported_ops(message)
    if not ops:
        return LiteConversionError(f"TFLite conversion failed: {message[-2000:]}")
    parts = []
    for op, scopes in ops.items():
        layers = layers_of_scopes(model, scopes)
        where = f" (used by layer{'s' if len(layers) > 1 else ''} {', '.join(repr(n) for n in layers)})" if layers \
            else ""
        parts.append(f"{op}{where}")
    return LiteConversionError(
        "These TensorFlow ops have no TFLite builtin kernel: " + "; ".join(parts) + ". Replace the layers that use "
        "them, or convert with `allow_flex=True` (the file then needs an interpreter linked with the Flex delegate, "
        "e.g. org.tensorflow:tensorflow-lite-select-tf-ops on Android; the Python `ai_edge_litert` interpreter "
        "has none)."
    )


# -- plain Keras models ---------------------------------------------------------


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
        quantize: None, `"dynamic"`, `"float16"` or `"int8"` (see `convert_archive`).
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
        dataset = representative_dataset(representative_data, [s.name for s in specs])
    if float_layers == "head":
        weighted = [i for i, layer in enumerate(model.layers) if layer.weights]
        float_layers = [layer.name for layer in model.layers[weighted[-1]:]] if weighted else []
    content = convert_archive(archive, ["serving_default"], quantize, dataset, allow_flex=allow_flex, model=model,
                              float_layers=tuple(float_layers or ()))
    if path is not None:
        write(path, content)
    return content


def representative_dataset(data, input_names, signature_key=None, batch_size=1):
    """A converter `representative_dataset` from an array of examples (or a callable, returned as is)."""
    if data is None:
        raise ValueError("int8 quantization needs `representative_data`: an array of typical inputs "
                         "(e.g. `lite.representative_images(images, labels)`), 100 or more examples.")
    if callable(data):
        return data
    data = np.asarray(data, np.float32)
    if len(input_names) != 1:
        raise ValueError("Give a callable `representative_data` for models with several inputs.")

    def generate():
        for start in range(0, len(data), batch_size):
            sample = {input_names[0]: data[start:start + batch_size]}
            yield sample if signature_key is None else (signature_key, sample)

    return generate


def write(path, content):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "wb") as f:
        f.write(content)
    return path


# -- the interpreter --------------------------------------------------------------


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
