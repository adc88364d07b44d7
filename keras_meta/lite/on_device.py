"""On-device adaptation: a `.tflite` file that adapts a MAML-trained model to a support set by itself.

`export_on_device_learner(learner, path)` takes a `MAML`, `MetaSGD` or `ANIL`
learner and writes one file with these signatures (in the style of
TensorFlow's on-device training guide; the weights live in resource
variables of the file):

* `adapt(support_x [S, ...], support_y [S] int32)` -> `loss` and the adapted
  state (`weight_0`, ..., `state_0`, ...): starts from the meta-learned
  weights and takes `steps` SGD steps on the support set with the
  meta-learned inner learning rate(s) (Meta-SGD's per-parameter rates too);
  `loss` is the support loss after adapting;
* `infer(x [n, ...])` -> `logits [n, ways]` with the adapted weights;
* `save()` -> the adapted state as tensors (`weight_0`, ..., `state_0`, ...),
  and `restore(weight_0=..., ...)` which puts such tensors back;
* `reset()`: back to the meta-learned weights.

int8 files have no `save` and `reset` signatures: TFLite's int8 calibrator
cannot load signatures without inputs. Keep the state that `adapt` returns.

`adapt_layers="head"` (the default) adapts the model's last layer, a `Dense`
of logits, with the gradient of the softmax cross-entropy written in closed
form (`dlogits = softmax - onehot`, `dW = h^T dlogits / S`, `db = mean
dlogits`): only TFLite builtin ops, so it runs in every LiteRT interpreter.
It is exactly the adaptation of an ANIL learner (or MAML with
`adapt_layers=[head]`); a MAML learner that adapts all layers is adapted on
its head only.

`adapt_layers="all"` adapts the layers the learner adapts, as `learner.adapt`
does, with `tf.GradientTape`. The gradients of convolutions, pooling and
ReLU (`Conv2DBackpropFilter`, `MaxPoolGrad`, `ReluGrad`) have no TFLite
builtin kernel, so such a file needs the Flex delegate (TensorFlow ops):
pass `allow_flex=True` to write it anyway (for Android's
`tensorflow-lite-select-tf-ops`); the Python `ai_edge_litert` interpreter
cannot run it. Without `allow_flex` a `LiteConversionError` names the ops.

Checkpoints: the guide's `save(path)`/`restore(path)` use `tf.raw_ops.Save` /
`Restore`, which are Flex ops too (`'tf.Save' op is neither a custom op nor a
flex op` with builtins only). Here `save` returns the state as tensors and
`restore` takes them; `save_state(lite_model, path[, state])` and
`restore_state(lite_model, path)` store them in a `.npz` file (an app writes
them with its own file API).

Batch normalisation (`batch_norm=`): `"support"` (default) does what
`learner.adapt` does: `adapt` sets the moving statistics to those of the
support set (under the adapted weights) and `infer` uses them, so the
predictions match `learner.adapt(...)` exactly. `"moving"` keeps the
meta-trained moving statistics (inference mode) in `adapt` and `infer`.

Example:

>>> import numpy as np, keras, keras_meta
>>> from keras_meta import lite
>>> learner = keras_meta.learners.ANIL(keras_meta.models.conv4(filters=4, num_classes=3), eval_inner_steps=2)
>>> device = lite.LiteModel(lite.export_on_device_learner(learner))
>>> sorted(device.signatures)
['adapt', 'infer', 'reset', 'restore', 'save']
>>> support_x, support_y = np.random.rand(3, 28, 28, 1), np.arange(3)
>>> loss = device.run("adapt", support_x=support_x, support_y=support_y)["loss"]
>>> device.run("infer", x=support_x)["logits"].shape
(3, 3)
"""

import keras
import numpy as np
import tensorflow as tf

from keras_meta.data.checks import integer_argument
from keras_meta.data.episode_format import SUPPORT_X, SUPPORT_Y
from keras_meta.lite import converter, on_device_steps
from keras_meta.lite.conversion_errors import LiteConversionError
from keras_meta.lite.export import input_specs
from keras_meta.lite.on_device_checks import check_learner
from keras_meta.lite.on_device_state import named_state
from keras_meta.lite.quantize import calibration, check_quantize

ADAPT_LAYERS = ("head", "all")
BATCH_NORM = ("support", "moving")
# With int8, the convolutions and pooling of the frozen body are quantized; the adapted head, its gradient and the
# state stay float32.
BODY_INT8_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D")
SIGNATURES = ("adapt", "infer", "save", "restore", "reset")
INT8_SIGNATURES = ("adapt", "infer", "restore")


def export_on_device_learner(learner, path=None, adapt_layers="head", steps=None, support_size=None,
                             batch_norm="support", quantize=None, representative_data=None, allow_flex=False):
    """Writes the on-device adaptation file of a MAML-family learner; returns the bytes.

    Args:
        learner: a `MAML`, `MetaSGD` or `ANIL` learner (inner loss: sparse
            softmax cross-entropy of logits, the usual compile loss).
        path: the `.tflite` file to write (None: only return the bytes).
        adapt_layers: `"head"` (builtin ops, see the module docstring) or
            `"all"` (the learner's adapted layers; usually needs `allow_flex`).
        steps: SGD steps of `adapt` (default: the learner's `eval_inner_steps`).
        support_size: a fixed support-set size, or None for any size.
        batch_norm: `"support"` (as `learner.adapt`) or `"moving"`.
        quantize: None, `"dynamic"` or `"float16"` (the frozen weights; the
            adapted ones stay float32), or `"int8"` (with `representative_data`,
            an array of images; ops on the float state stay float).
        allow_flex: allow TensorFlow (Flex) ops.
    """
    archive = on_device_archive(learner, adapt_layers, steps, support_size, batch_norm)
    model = learner.model
    dataset = None
    if check_quantize(quantize) == "int8":
        dataset = _calibration(representative_data, support_size, model.output_shape[-1])
    try:
        # The int8 calibrator cannot load signatures without inputs: int8 files have no `save` and `reset`.
        signatures = INT8_SIGNATURES if quantize == "int8" else SIGNATURES
        content = converter.convert_archive(archive, signatures, quantize, dataset, resource_variables=True,
                                         allow_flex=allow_flex, model=model, int8_ops=BODY_INT8_OPS)
    except LiteConversionError as error:
        if adapt_layers == "head":
            raise
        raise LiteConversionError(
            f"{error} adapt_layers='head' adapts the last Dense layer with builtin ops only."
        ) from None
    if path is not None:
        converter.write(path, content)
    return content


def on_device_archive(learner, adapt_layers="head", steps=None, support_size=None, batch_norm="support"):
    """The `keras.export.ExportArchive` of `export_on_device_learner` (its endpoints also run in TensorFlow)."""
    check_learner(learner)
    if adapt_layers not in ADAPT_LAYERS:
        raise ValueError(f"`adapt_layers` must be one of {ADAPT_LAYERS}, got {adapt_layers!r}.")
    if batch_norm not in BATCH_NORM:
        raise ValueError(f"`batch_norm` must be one of {BATCH_NORM}, got {batch_norm!r}.")
    steps = learner.eval_inner_steps if steps is None else integer_argument("steps", steps, minimum=0)
    model = learner.model
    (spec,) = input_specs(model)
    if adapt_layers == "head":
        endpoints = on_device_steps.head_endpoints(learner, model, steps, batch_norm)
    else:
        endpoints = on_device_steps.all_endpoints(learner, model, steps, batch_norm)
    functions, variables = endpoints
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_variable_collection("on_device_state", variables)
    example = spec.shape[1:]
    archive.add_endpoint("adapt", functions["adapt"], input_signature=[
        tf.TensorSpec([support_size, *example], spec.dtype, name=SUPPORT_X),
        tf.TensorSpec([support_size], tf.int32, name=SUPPORT_Y),
    ])
    archive.add_endpoint("infer", functions["infer"],
                         input_signature=[tf.TensorSpec([None, *example], spec.dtype, name="x")])
    archive.add_endpoint("save", functions["save"], input_signature=[])
    archive.add_endpoint("restore", functions["restore"], input_signature=[
        tf.TensorSpec(v.shape, v.dtype, name=name) for name, v in named_state(variables)
    ])
    archive.add_endpoint("reset", functions["reset"], input_signature=[])
    return archive


def _calibration(images, support_size, ways):
    """Calibration samples of `adapt` and `infer`, support sets of `support_size` (or `ways`) images."""
    size = support_size or ways

    def samples(data, start):
        x = data[start:start + size]
        yield "adapt", {SUPPORT_X: x, SUPPORT_Y: np.arange(size, dtype=np.int32) % ways}
        yield "infer", {"x": x}

    return calibration(images, size, samples)

