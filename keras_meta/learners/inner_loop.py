"""The inner-loop core shared by the gradient-based learners.

An inner loop takes a task's support set and a list of weights (tensors, in
the order of `model.trainable_variables`) and returns adapted weights after
K gradient steps, computed functionally with `keras.Model.stateless_call`
under nested `tf.GradientTape`s. The result stays differentiable with respect
to the starting weights (and to learnable step sizes), so a query loss
computed with the adapted weights gives the second-order meta-gradient.

* ``first_order=True`` cuts the graph of the whole adaptation: the adapted
  weights still have the adapted values, but their gradient is passed to the
  starting weights unchanged (first-order MAML).
* ``truncation=T`` differentiates through the last T steps only; the steps
  before are treated the same way as in first-order MAML.

Batch normalisation: the learners trace their inner loops and query passes
under `fused_batch_norm()` (`keras_meta.ops.batch_norm`), which makes Keras'
BatchNormalization exact to second order (its own batch variance stops the
gradient through the mean) and runs it as TensorFlow's fused op.

Example:

>>> import keras, tensorflow as tf
>>> from keras_meta.learners import inner_loop
>>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
>>> x, y = tf.ones([4, 2]), tf.zeros([4, 1])
>>> loss = inner_loop.support_loss(model, keras.losses.MeanSquaredError(), x, y)
>>> weights = [tf.convert_to_tensor(v) for v in model.trainable_variables]
>>> adapted = inner_loop.gradient_descent(loss, weights, steps=3, learning_rate=0.1)
>>> len(adapted) == len(weights)
True
"""

import keras
import tensorflow as tf

from keras_meta.ops.batch_norm import exact_batch_norm_moments, fused_batch_norm  # noqa: F401 (part of the core)
from keras_meta.ops.functional import functional_call


def example_weights(targets):
    """`(targets, weights)`: padded classification slots (label -1) get weight 0 and label 0."""
    if targets.dtype.is_integer:
        valid = targets >= 0
        return tf.where(valid, targets, tf.zeros_like(targets)), tf.cast(valid, tf.float32)
    return targets, None


def mean_loss(loss_fn, targets, predictions, sample_weight=None):
    """Mean per-example loss, skipping padded examples (integer label -1 or `sample_weight` 0)."""
    targets, weights = example_weights(targets)
    if sample_weight is not None:
        sample_weight = tf.cast(sample_weight, tf.float32)
        weights = sample_weight if weights is None else weights * sample_weight
    per_example = loss_fn.call(targets, predictions) if isinstance(loss_fn, keras.losses.Loss) else loss_fn(
        targets, predictions
    )
    per_example = tf.reshape(per_example, [tf.shape(per_example)[0], -1])
    per_example = tf.reduce_mean(per_example, axis=1)
    if weights is None:
        return tf.reduce_mean(per_example)
    weights = tf.cast(weights, per_example.dtype)
    return tf.reduce_sum(per_example * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)


NON_FINITE_INNER_LOSS = (
    "The inner-loop loss on a task's support set is NaN or infinite. Check the episodes for NaN/Inf inputs "
    "or targets, or lower the inner learning rate (the inner steps may diverge)"
)


def support_loss(model, loss_fn, support_x, support_y, state=None, extra_loss=None, check=True):
    """`weights -> loss` of `model` on one task's support set, run in training mode.

    Training mode means batch normalisation uses the task's own batch
    statistics; the model's moving statistics are not changed.
    `extra_loss(weights)` is added when given (a proximal term, say).
    With `check`, a NaN or infinite loss raises an error, except under XLA
    (`jit_compile=True`), which drops the check: there it shows as a NaN loss.
    (A learner's training step checks its whole update instead.)
    """

    def loss(weights):
        predictions = functional_call(model, weights, support_x, training=True, state=state)
        value = mean_loss(loss_fn, support_y, predictions)
        if extra_loss is not None:
            value = value + extra_loss(weights)
        return tf.debugging.check_numerics(value, NON_FINITE_INNER_LOSS) if check else value

    return loss


def clip_by_global_norm(grads, clipnorm):
    """Scales `grads` (some may be `None`) so their global norm is at most `clipnorm`."""
    if clipnorm is None:
        return grads
    present = [g for g in grads if g is not None]
    clipped, _ = tf.clip_by_global_norm(present, clipnorm)
    clipped = iter(clipped)
    return [None if g is None else next(clipped) for g in grads]


def gradient_descent(loss_fn, weights, steps, learning_rate=None, update_fn=None, adapt_mask=None,
                     first_order=False, truncation=None, clipnorm=None, return_trajectory=False):
    """K steps of gradient descent on `loss_fn(weights)`; returns the adapted weights.

    Args:
        loss_fn: `weights -> scalar loss`, e.g. from `support_loss`.
        weights: list of tensors (the starting point, usually the meta-weights).
        steps: number of inner steps (a Python int; 0 returns `weights`).
        learning_rate: a scalar step size, used when `update_fn` is None.
        update_fn: `grads -> updates` for the adapted weights (in order), e.g.
            a `LearnableOptimizer`; the new weights are `w + update`.
        adapt_mask: one bool per weight; `False` keeps that weight fixed
            (ANIL adapts only the head). Default: all adapt.
        first_order: do not differentiate through the adaptation.
        truncation: differentiate through the last `truncation` steps only.
        clipnorm: clip each step's gradients to this global norm.
        return_trajectory: return the list of weights after every step
            (`steps` lists; `[weights]` for 0 steps) instead of the last ones.
    """
    weights = list(weights)
    if adapt_mask is None:
        adapt_mask = [True] * len(weights)
    adapted_ids = [i for i, adapts in enumerate(adapt_mask) if adapts]
    if update_fn is None:
        if learning_rate is None:
            raise ValueError("Give `learning_rate` or `update_fn`.")

        def update_fn(grads):
            return [-tf.cast(tf.convert_to_tensor(learning_rate, dtype_hint=g.dtype), g.dtype) * g for g in grads]

    if steps == 0 or not adapted_ids:
        return [weights] * max(steps, 1) if return_trajectory else weights
    exact_steps = 0 if first_order else steps if truncation is None else min(int(truncation), steps)
    detached_steps = steps - exact_steps

    current = [tf.stop_gradient(w) for w in weights] if detached_steps else list(weights)
    trajectory = []
    for step in range(steps):
        if detached_steps and step == detached_steps:
            current = reattach(weights, current)
        params = [current[i] for i in adapted_ids]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(params)
            loss = loss_fn(current)
        grads = dense_gradients(tape.gradient(loss, params), params)
        if step < detached_steps:
            grads = [tf.stop_gradient(g) for g in grads]
        grads = clip_by_global_norm(grads, clipnorm)
        for i, update in zip(adapted_ids, update_fn(grads)):
            current[i] = current[i] + update
        if return_trajectory:
            trajectory.append(reattach(weights, current) if step < detached_steps else list(current))
    if detached_steps == steps:
        current = reattach(weights, current)
    return trajectory if return_trajectory else current


def dense_gradients(grads, params):
    """Gradients as dense tensors: embedding lookups give `IndexedSlices`, unused weights `None`."""
    return [tf.zeros_like(p) if g is None else tf.convert_to_tensor(g) for g, p in zip(grads, params)]


def reattach(start, adapted):
    """Adapted values whose gradient passes to `start` as the identity (first-order)."""
    return [s + tf.stop_gradient(a - s) for s, a in zip(start, adapted)]


def dot(xs, ys):
    """Inner product of two lists of tensors."""
    return tf.add_n([tf.reduce_sum(x * y) for x, y in zip(xs, ys)])


def hessian_vector_product(loss_fn, weights, vector):
    """`H v` for the Hessian `H` of `loss_fn` at `weights` (lists of tensors), by double back-propagation."""
    weights = list(weights)
    with tf.GradientTape(watch_accessed_variables=False) as outer:
        outer.watch(weights)
        with tf.GradientTape(watch_accessed_variables=False) as inner:
            inner.watch(weights)
            loss = loss_fn(weights)
        grads = inner.gradient(loss, weights)
        projection = dot(grads, vector)
    return outer.gradient(projection, weights)


def conjugate_gradient(matvec, b, steps):
    """Approximately solves `A x = b` for symmetric positive-definite `A` in `steps` CG iterations.

    `matvec(v)` returns `A v`; vectors are lists of tensors.
    """
    x = [tf.zeros_like(t) for t in b]
    r, p = list(b), list(b)
    residual = dot(r, r)
    for _ in range(steps):
        ap = matvec(p)
        alpha = tf.math.divide_no_nan(residual, dot(p, ap))
        x = [xi + alpha * pi for xi, pi in zip(x, p)]
        r = [ri - alpha * api for ri, api in zip(r, ap)]
        new_residual = dot(r, r)
        p = [ri + tf.math.divide_no_nan(new_residual, residual) * pi for ri, pi in zip(r, p)]
        residual = new_residual
    return x
