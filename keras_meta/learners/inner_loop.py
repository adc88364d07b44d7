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

import functools

import keras
import tensorflow as tf

from keras_meta.ops.batch_norm import within_same_batch_norm
from keras_meta.ops.functional import functional_call
from keras_meta.ops.recompute import recompute_gradient


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
                     first_order=False, truncation=None, clipnorm=None, return_trajectory=False, recompute=False,
                     step_weights=None):
    """K steps of gradient descent on `loss_fn(weights)`; returns the adapted weights.

    Args:
        loss_fn: `weights -> scalar loss`, e.g. from `support_loss`.
        weights: list of tensors (the starting point, usually the meta-weights).
        steps: number of inner steps (a Python int; 0 returns `weights`).
        learning_rate: a scalar step size, used when `update_fn` is None.
        update_fn: `(grads, step) -> updates` for the adapted weights (in
            order) at inner step `step` (from 0), e.g. a `LearnableOptimizer`;
            the new weights are `w + update`.
        adapt_mask: one bool per weight; `False` keeps that weight fixed
            (ANIL adapts only the head). Default: all adapt.
        first_order: do not differentiate through the adaptation's gradients:
            the adapted weights pass the meta-gradient on to `weights` as the
            identity, and to the update rule's own weights (learned rates)
            through the updates.
        truncation: differentiate through the last `truncation` steps only.
        clipnorm: clip each step's gradients to this global norm.
        return_trajectory: return the list of weights after every step
            (`steps` lists; `[weights]` for 0 steps) instead of the last ones.
        recompute: keep only the weights between the differentiated steps
            and recompute each step's activations when back-propagating
            through it (`keras_meta.ops.recompute_gradient`): the same meta-gradient, with
            memory that grows by one copy of the weights per step instead of
            one step's activations and gradients.
        step_weights: `(weights, step) -> weights` for weights that do not
            adapt but differ per step (MAML++'s per-step batch-norm scales):
            the weights of inner step `step`'s forward pass, and, with
            `step == steps`, those the adapted weights carry.
    """
    weights = list(weights)
    if adapt_mask is None:
        adapt_mask = [True] * len(weights)
    adapted_ids = [i for i, adapts in enumerate(adapt_mask) if adapts]
    if update_fn is None:
        if learning_rate is None:
            raise ValueError("Give `learning_rate` or `update_fn`.")

        def update_fn(grads, step):
            return [-tf.cast(tf.convert_to_tensor(learning_rate, dtype_hint=g.dtype), g.dtype) * g for g in grads]

    if step_weights is None:
        def step_weights(weights, step):
            return weights

    if steps == 0 or not adapted_ids:
        trajectory = [step_weights(weights, step + 1) for step in range(steps)] or [step_weights(weights, 0)]
        return trajectory if return_trajectory else trajectory[-1]
    exact_steps = 0 if first_order else steps if truncation is None else min(int(truncation), steps)
    detached_steps = steps - exact_steps

    def step(index, *current, first_order=False):
        """The adapted weights after step `index` from `current` (all weights, so gradients reach the fixed ones).

        First order: the step's gradient is a constant, so the adapted weights
        depend on `current` as the identity and on the update rule's own
        weights (learned rates) through `update_fn` alone.
        """
        current = list(current)
        params = [current[i] for i in adapted_ids]
        at = [tf.stop_gradient(w) for w in current] if first_order else current
        watched = [at[i] for i in adapted_ids]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(watched)
            loss = loss_fn(at)
        grads = clip_by_global_norm(dense_gradients(tape.gradient(loss, watched), watched), clipnorm)
        if first_order:
            grads = [tf.stop_gradient(g) for g in grads]
        return [param + update for param, update in zip(params, update_fn(grads, index), strict=True)]

    current = list(weights)
    trajectory = []
    for index in range(steps):
        current = step_weights(current, index)
        if index < detached_steps:
            adapted = step(index, *current, first_order=True)
        elif recompute:
            adapted = recompute_gradient(within_same_batch_norm(functools.partial(step, index)))(*current)
        else:
            adapted = step(index, *current)
        for i, value in zip(adapted_ids, adapted, strict=True):
            current[i] = value
        if return_trajectory:
            trajectory.append(step_weights(list(current), index + 1))
    current = step_weights(current, steps)
    return trajectory if return_trajectory else current


def dense_gradients(grads, params):
    """Gradients as dense tensors: embedding lookups give `IndexedSlices`, unused weights `None`."""
    return [tf.zeros_like(p) if g is None else tf.convert_to_tensor(g) for g, p in zip(grads, params, strict=True)]


def dot(xs, ys):
    """Inner product of two lists of tensors."""
    return tf.add_n([tf.reduce_sum(x * y) for x, y in zip(xs, ys, strict=True)])


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
        x = [xi + alpha * pi for xi, pi in zip(x, p, strict=True)]
        r = [ri - alpha * api for ri, api in zip(r, ap, strict=True)]
        new_residual = dot(r, r)
        p = [ri + tf.math.divide_no_nan(new_residual, residual) * pi for ri, pi in zip(r, p, strict=True)]
        residual = new_residual
    return x
