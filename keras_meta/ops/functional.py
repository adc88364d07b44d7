"""Functional use of Keras models: run, clone, update and detach weight lists.

The Keras counterparts of learn2learn's `clone_module`, `update_module` and
`detach_module`: a model's weights become a plain list of tensors that flows
through `tf.GradientTape`, so an update computed from them stays
differentiable. `functional_call` runs the model on such a list without
touching its variables (`keras.Model.stateless_call`).

Example:

>>> import keras, tensorflow as tf
>>> from keras_meta import ops
>>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
>>> x = tf.ones([4, 3])
>>> with tf.GradientTape() as tape:
...     weights = ops.clone_weights(model)       # differentiable copies
...     tape.watch(weights)
...     loss = tf.reduce_mean(ops.functional_call(model, weights, x) ** 2)
>>> grads = tape.gradient(loss, weights)
>>> adapted = ops.update_weights(weights, [-0.1 * g for g in grads])
>>> ops.functional_call(model, adapted, x).shape
TensorShape([4, 2])
"""

import keras
import tensorflow as tf


def functional_call(model, weights, x, training=False, state=None, return_state=False):
    """Runs `model` on `x` with `weights` in place of its trainable variables.

    Args:
        model: a built Keras model.
        weights: tensors in the order of `model.trainable_variables`.
        x: the model's inputs.
        training: the `training` flag of the call (batch statistics, dropout).
        state: values for `model.non_trainable_variables` (default: theirs).
        return_state: also return the non-trainable values the call produced
            (for example BatchNormalization's updated moving statistics).

    Returns:
        The outputs, or `(outputs, state)` with `return_state=True`. The
        model's variables are left unchanged.
    """
    if len(weights) != len(model.trainable_variables):
        raise ValueError(
            f"`weights` has {len(weights)} tensors but the model has {len(model.trainable_variables)} "
            "trainable variables; pass one tensor per variable, in the order of `model.trainable_variables`."
        )
    if state is None:
        state = [tf.convert_to_tensor(v) for v in model.non_trainable_variables]
    outputs, new_state = model.stateless_call(list(weights), list(state), x, training=training)
    return (outputs, new_state) if return_state else outputs


def clone_weights(model):
    """Differentiable copies of `model.trainable_variables`: a list of tensors.

    Gradients of anything computed from the copies flow back to the variables.
    """
    return [tf.identity(tf.convert_to_tensor(v)) for v in model.trainable_variables]


def clone_model(model, weights=None):
    """An independent Keras model with the same architecture and weights.

    `weights` (tensors in the order of `model.trainable_variables`) replaces
    the trainable weights of the copy, for example the result of an inner loop.
    Non-trainable weights (BatchNormalization statistics) are copied as they are.
    """
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    if weights is not None:
        if len(weights) != len(copy.trainable_variables):
            raise ValueError(
                f"`weights` has {len(weights)} tensors but the model has {len(copy.trainable_variables)} "
                "trainable variables."
            )
        for variable, value in zip(copy.trainable_variables, weights, strict=True):
            variable.assign(value)
    return copy


def update_weights(weights, updates):
    """`weights[i] + updates[i]`, differentiably; an update of `None` leaves a weight as it is."""
    if len(weights) != len(updates):
        raise ValueError(f"{len(weights)} weights but {len(updates)} updates; give one update per weight.")
    return [w if u is None else w + tf.cast(u, w.dtype) for w, u in zip(weights, updates, strict=True)]


def detach_weights(weights):
    """The same values with the gradient cut (`tf.stop_gradient` on each)."""
    return [tf.stop_gradient(w) for w in weights]


def magic_box(x):
    """DiCE's MagicBox: value 1, gradient that of `x` (`exp(x - stop_gradient(x))`).

    Multiplying a cost by `magic_box(sum of log-probabilities)` gives unbiased
    higher-order score-function gradient estimates (Foerster et al. 2018).

    >>> x = tf.constant(2.0)
    >>> with tf.GradientTape() as tape:
    ...     tape.watch(x)
    ...     y = magic_box(3.0 * x)
    >>> float(y), float(tape.gradient(y, x))
    (1.0, 3.0)
    """
    x = tf.convert_to_tensor(x)
    return tf.exp(x - tf.stop_gradient(x))
