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
from keras_meta.learners import inner_loop
from keras_meta.lite import converter
from keras_meta.lite.conversion_errors import LiteConversionError
from keras_meta.lite.export import input_specs
from keras_meta.lite.quantize import calibration, check_quantize
from keras_meta.ops.batch_norm import batch_statistics_become_moving, exact_batch_norm_moments

ADAPT_LAYERS = ("head", "all")
BATCH_NORM = ("support", "moving")
# With int8, the convolutions and pooling of the frozen body are quantized; the adapted head, its gradient and the
# state stay float32.
BODY_INT8_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D")
SIGNATURES = ("adapt", "infer", "save", "restore", "reset")
INT8_SIGNATURES = ("adapt", "infer", "restore")


def check_learner(learner):
    from keras_meta.learners import MAML

    if not isinstance(learner, MAML):
        raise LiteConversionError(
            "On-device adaptation takes a MAML, MetaSGD or ANIL learner (SGD steps with its inner learning "
            f"rates), got {type(learner).__name__}. Export `learner.adapt(...)` with `export_model` instead."
        )
    if getattr(learner.inner_optimizer, "steps", None) is not None or getattr(learner, "batch_norm_steps", None):
        raise LiteConversionError(
            f"On-device adaptation runs the same learning rates and batch-norm weights at every inner step; this "
            f"{type(learner).__name__} has per-step ones (`per_step_inner_learning_rates` or `per_step_batch_norm`, "
            "as MAMLPlusPlus). Export `learner.adapt(...)` with `export_model` instead."
        )
    if getattr(learner.inner_optimizer, "transform", None) is not None:
        raise LiteConversionError(
            f"On-device adaptation takes plain SGD steps with learned rates; this {type(learner).__name__} "
            "preconditions its gradients (`inner_transform`). Export `learner.adapt(...)` with `export_model` instead."
        )
    loss = learner.inner_loss if learner.inner_loss is not None else getattr(learner, "loss", None)
    if loss is not None and not isinstance(loss, (dict, list, tuple)):
        loss = keras.losses.get(loss)
        config = loss.get_config() if isinstance(loss, keras.losses.Loss) else {}
        if not isinstance(loss, keras.losses.SparseCategoricalCrossentropy) or not config.get("from_logits"):
            raise LiteConversionError(
                "On-device adaptation implements the softmax cross-entropy of integer labels "
                "(SparseCategoricalCrossentropy(from_logits=True)); the learner's inner loss is "
                f"{getattr(loss, 'name', loss)!r}."
            )
    return learner


def learning_rates(learner):
    """One rate (scalar or per-parameter array) per trainable variable of `learner.model` (None if frozen)."""
    model = learner.model
    rates = [None] * len(model.trainable_variables)
    adapted = [i for i, adapts in enumerate(learner.adapt_mask) if adapts]
    if learner.inner_optimizer is None:
        for i in adapted:
            rates[i] = np.float32(learner.inner_learning_rate)
    else:
        for i, rate in zip(adapted, learner.inner_optimizer.learning_rates, strict=True):
            rates[i] = np.asarray(keras.ops.convert_to_numpy(rate), np.float32)
    return rates


def head_layer(model):
    """The last layer of `model`: a `Dense` layer computing linear logits, with a bias."""
    layers = model.layers
    head = layers[-1] if layers else None
    if not isinstance(head, keras.layers.Dense) or head.activation not in (None, keras.activations.linear) \
            or not head.use_bias:
        name = head.name if head is not None else "?"
        raise LiteConversionError(
            f"adapt_layers='head' needs a model whose last layer is a Dense layer of linear logits with a bias; "
            f"layer {name!r} ({type(head).__name__}) is not. Use adapt_layers='all' (needs Flex ops)."
        )
    return head


def cross_entropy(onehot, logits):
    """Mean softmax cross-entropy with builtin ops only."""
    return -tf.reduce_mean(tf.reduce_sum(onehot * tf.nn.log_softmax(logits), axis=-1))


def clip(grads, clipnorm):
    """`inner_loop.clip_by_global_norm` written with builtin TFLite ops only (no finiteness checks)."""
    if clipnorm is None:
        return grads
    norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(g)) for g in grads]))
    scale = clipnorm / tf.maximum(norm, clipnorm)
    return [g * scale for g in grads]


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
        endpoints = _head_endpoints(learner, model, steps, batch_norm)
    else:
        endpoints = _all_endpoints(learner, model, steps, batch_norm)
    functions, variables = endpoints
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_variable_collection("on_device_state", variables)
    example = spec.shape[1:]
    archive.add_endpoint("adapt", functions["adapt"], input_signature=[
        tf.TensorSpec([support_size, *example], spec.dtype, name="support_x"),
        tf.TensorSpec([support_size], tf.int32, name="support_y"),
    ])
    archive.add_endpoint("infer", functions["infer"],
                         input_signature=[tf.TensorSpec([None, *example], spec.dtype, name="x")])
    archive.add_endpoint("save", functions["save"], input_signature=[])
    archive.add_endpoint("restore", functions["restore"], input_signature=[
        tf.TensorSpec(v.shape, v.dtype, name=name) for name, v in _named(variables)
    ])
    archive.add_endpoint("reset", functions["reset"], input_signature=[])
    return archive


def _named(variables):
    weights = [v for v in variables if v.name.startswith("weight_")]
    states = [v for v in variables if v.name.startswith("state_")]
    return [(v.name.split(":")[0], v) for v in weights + states]


def _outputs(variables, values):
    """`{name: value}` of the file's state, from values in the order of `variables`."""
    value_of = {id(v): value for v, value in zip(variables, values, strict=True)}
    return {name: value_of[id(v)] for name, v in _named(variables)}


def _state_functions(variables, initial):
    """`save`, `restore` and `reset` over the file's variables."""
    named = _named(variables)

    def save():
        return {name: tf.identity(v) for name, v in named}

    def restore(*values):
        for (_, v), value in zip(named, values, strict=True):
            v.assign(value)
        return {"restored": tf.constant(len(named), tf.int32)}

    def reset():
        for (_, v), value in zip(named, initial, strict=True):
            v.assign(value)
        return {"reset": tf.constant(len(named), tf.int32)}

    return save, restore, reset


def _head_endpoints(learner, model, steps, batch_norm):
    head = head_layer(model)
    index = {id(v): i for i, v in enumerate(model.trainable_variables)}
    kernel_i, bias_i = index[id(head.kernel)], index[id(head.bias)]
    if not (learner.adapt_mask[kernel_i] and learner.adapt_mask[bias_i]):
        raise LiteConversionError(
            f"The learner does not adapt the head {head.name!r} (its adapt_layers are {learner.adapt_layers}), so it "
            "has no inner learning rate for it; meta-train with the head adapted (MAML, ANIL)."
        )
    rates = learning_rates(learner)
    kernel_rate, bias_rate = tf.constant(rates[kernel_i]), tf.constant(rates[bias_i])
    try:
        body = keras.Model(model.inputs, head.input)
    except Exception as error:  # subclassed models have no graph of layers
        raise LiteConversionError(
            f"adapt_layers='head' needs a Sequential or functional model, to split off the head {head.name!r}: "
            f"{error}"
        ) from None
    ways = head.units
    clipnorm = learner.inner_clipnorm
    kernel0 = tf.constant(keras.ops.convert_to_numpy(head.kernel))
    bias0 = tf.constant(keras.ops.convert_to_numpy(head.bias))
    kernel = tf.Variable(kernel0, name="weight_0")
    bias = tf.Variable(bias0, name="weight_1")
    variables = [kernel, bias]
    support_stats = batch_norm == "support" and bool(body.non_trainable_variables)
    state0 = [tf.constant(keras.ops.convert_to_numpy(v)) for v in body.non_trainable_variables]
    state = [tf.Variable(s, name=f"state_{i}") for i, s in enumerate(state0)] if support_stats else []
    variables += state
    initial = [kernel0, bias0] + (state0 if support_stats else [])
    body_weights = list(body.trainable_variables)

    def features(x, training):
        current = [tf.convert_to_tensor(s) for s in state] if support_stats else state0
        with batch_statistics_become_moving(body), exact_batch_norm_moments():  # TFLite builtins
            return body.stateless_call([tf.convert_to_tensor(w) for w in body_weights], current, x,
                                       training=training)

    def adapt(support_x, support_y):
        new_state = []
        if support_stats:
            h, new_state = features(support_x, training=True)
            for v, value in zip(state, new_state, strict=True):
                v.assign(value)
        else:
            h, _ = features(support_x, training=False)
        onehot = tf.one_hot(support_y, ways, dtype=h.dtype)
        count = tf.cast(tf.shape(h)[0], h.dtype)
        w, b = kernel0, bias0
        for _ in range(steps):
            dlogits = (tf.nn.softmax(tf.matmul(h, w) + b) - onehot) / count
            grads = clip([tf.matmul(h, dlogits, transpose_a=True), tf.reduce_sum(dlogits, axis=0)], clipnorm)
            w, b = w - kernel_rate * grads[0], b - bias_rate * grads[1]
        kernel.assign(w)
        bias.assign(b)
        return {"loss": cross_entropy(onehot, tf.matmul(h, w) + b), **_outputs(variables, [w, b, *new_state])}

    def infer(x):
        h, _ = features(x, training=False)
        return {"logits": tf.matmul(h, kernel) + bias}

    save, restore, reset = _state_functions(variables, initial)
    return dict(adapt=adapt, infer=infer, save=save, restore=restore, reset=reset), variables


def _all_endpoints(learner, model, steps, batch_norm):
    mask = learner.adapt_mask
    rates = learning_rates(learner)
    adapted = [i for i, adapts in enumerate(mask) if adapts]
    meta = [tf.constant(keras.ops.convert_to_numpy(v)) for v in model.trainable_variables]
    weights = {i: tf.Variable(meta[i], name=f"weight_{n}") for n, i in enumerate(adapted)}
    frozen = list(model.trainable_variables)
    state0 = [tf.constant(keras.ops.convert_to_numpy(v)) for v in model.non_trainable_variables]
    support_stats = batch_norm == "support" and bool(state0)
    state = [tf.Variable(s, name=f"state_{i}") for i, s in enumerate(state0)] if support_stats else []
    variables = [weights[i] for i in adapted] + state
    initial = [meta[i] for i in adapted] + (state0 if support_stats else [])
    rate_tensors = {i: tf.constant(rates[i]) for i in adapted}
    ways = model.output_shape[-1]
    clipnorm = learner.inner_clipnorm
    training = batch_norm == "support"

    def current_weights(values):
        return [values[i] if i in values else tf.convert_to_tensor(frozen[i]) for i in range(len(frozen))]

    def adapt(support_x, support_y):
        values = {i: meta[i] for i in adapted}
        onehot = tf.one_hot(support_y, ways)
        with batch_statistics_become_moving(model), exact_batch_norm_moments():  # TFLite builtins
            for _ in range(steps):
                params = [values[i] for i in adapted]
                with tf.GradientTape(watch_accessed_variables=False) as tape:
                    tape.watch(params)
                    logits, _ = model.stateless_call(current_weights(values), state0, support_x, training=training)
                    loss = cross_entropy(onehot, logits)
                grads = clip(inner_loop.dense_gradients(tape.gradient(loss, params), params), clipnorm)
                for i, g in zip(adapted, grads, strict=True):
                    values[i] = values[i] - rate_tensors[i] * g
            logits, new_state = model.stateless_call(current_weights(values), state0, support_x, training=training)
        for i in adapted:
            weights[i].assign(values[i])
        if support_stats:  # otherwise the statistics stay the meta-trained moving ones
            for v, value in zip(state, new_state, strict=True):
                v.assign(value)
        new_values = [values[i] for i in adapted] + (list(new_state) if support_stats else [])
        return {"loss": cross_entropy(onehot, logits), **_outputs(variables, new_values)}

    def infer(x):
        values = {i: tf.convert_to_tensor(weights[i]) for i in adapted}
        current_state = [tf.convert_to_tensor(s) for s in state] if support_stats else state0
        logits, _ = model.stateless_call(current_weights(values), current_state, x, training=False)
        return {"logits": logits}

    save, restore, reset = _state_functions(variables, initial)
    return dict(adapt=adapt, infer=infer, save=save, restore=restore, reset=reset), variables


def _calibration(images, support_size, ways):
    """Calibration samples of `adapt` and `infer`, support sets of `support_size` (or `ways`) images."""
    size = support_size or ways

    def samples(data, start):
        x = data[start:start + size]
        yield "adapt", {"support_x": x, "support_y": np.arange(size, dtype=np.int32) % ways}
        yield "infer", {"x": x}

    return calibration(images, size, samples)


def save_state(lite_model, path, state=None):
    """Writes the adapted state of an on-device file (`LiteModel`) to a `.npz` file; returns `path`.

    `state`: the outputs of an `adapt` call (needed for int8 files, which
    have no `save` signature); default: the file's `save` signature.
    """
    if state is None:
        if "save" not in lite_model.signatures:
            raise ValueError("This file has no `save` signature (int8): pass `state=`, the outputs of `adapt`.")
        state = lite_model.run("save")
    np.savez(path, **{name: value for name, value in state.items() if name != "loss"})
    return path


def restore_state(lite_model, path):
    """Puts a state written by `save_state` back into an on-device file (`LiteModel`)."""
    with np.load(path) as data:
        lite_model.run("restore", **{name: data[name] for name in data.files})
    return lite_model
