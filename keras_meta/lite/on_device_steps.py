"""The computations of an on-device adaptation file: `adapt` (SGD steps on a support set) and `infer`.

They are written with ops that TFLite has builtin kernels for where it can
(`adapt_layers="head"`: the gradient of the softmax cross-entropy in closed
form); `adapt_layers="all"` differentiates with `tf.GradientTape`.

Example:

>>> import tensorflow as tf
>>> from keras_meta.lite import on_device_steps
>>> [round(float(g), 3) for g in on_device_steps.clip([tf.constant(3.0), tf.constant(4.0)], clipnorm=1.0)]
[0.6, 0.8]
"""

import keras
import tensorflow as tf

from keras_meta.learners import inner_loop
from keras_meta.lite.conversion_errors import LiteConversionError
from keras_meta.lite.on_device_checks import head_layer, learning_rates
from keras_meta.lite.on_device_state import state_functions, state_outputs
from keras_meta.ops.batch_norm import batch_statistics_become_moving, exact_batch_norm_moments


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


def head_endpoints(learner, model, steps, batch_norm):
    """`adapt`, `infer` and the state functions of `adapt_layers="head"`: the head's gradient in closed form."""
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
        return {"loss": cross_entropy(onehot, tf.matmul(h, w) + b), **state_outputs(variables, [w, b, *new_state])}

    def infer(x):
        h, _ = features(x, training=False)
        return {"logits": tf.matmul(h, kernel) + bias}

    save, restore, reset = state_functions(variables, initial)
    return dict(adapt=adapt, infer=infer, save=save, restore=restore, reset=reset), variables


def all_endpoints(learner, model, steps, batch_norm):
    """`adapt`, `infer` and the state functions of `adapt_layers="all"`: the learner's adapted layers, by tape."""
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
        return {"loss": cross_entropy(onehot, logits), **state_outputs(variables, new_values)}

    def infer(x):
        values = {i: tf.convert_to_tensor(weights[i]) for i in adapted}
        current_state = [tf.convert_to_tensor(s) for s in state] if support_stats else state0
        logits, _ = model.stateless_call(current_weights(values), current_state, x, training=False)
        return {"logits": logits}

    save, restore, reset = state_functions(variables, initial)
    return dict(adapt=adapt, infer=infer, save=save, restore=restore, reset=reset), variables
