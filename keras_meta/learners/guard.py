"""The update guard: a training step with a non-finite input, loss or gradient changes nothing.

Every learner's `train_step` ends in `MetaLearner.apply_update`, which asks
this module whether the step is finite: the support and query inputs, the
float targets, the loss and every gradient. A step that is not applies no
gradient (the weights and the optimizer's slots and iteration count stay as
they were), restores the batch-normalisation statistics its forward pass
moved, and leaves the loss and metrics untouched. What happens next is the
learner's `on_non_finite`:

* `"raise"` (default): `fit` (or `train_on_batch`) stops with a
  `NonFiniteError` naming the step and what was non-finite;
* `"skip"`: training goes on, and the logs count the skipped steps of the
  epoch as `skipped_steps`.

The check reads every input and gradient once; oneDNN's fused Dense+ReLU,
which maps a NaN input to 0 in the forward pass (a finite loss with NaN
gradients), cannot hide one from it.

Example:

>>> import keras, numpy as np, keras_meta
>>> learner = keras_meta.learners.PrototypicalNetwork(keras_meta.models.mlp((4,), (8,)))
>>> learner.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
>>> episode = {"support_x": np.ones((1, 2, 4), "float32"), "support_y": np.array([[0, 1]]),
...            "query_x": np.full((1, 2, 4), np.nan, "float32")}
>>> try:
...     learner.train_on_batch(episode, np.array([[0, 1]]))
... except keras_meta.learners.NonFiniteError as error:
...     print(str(error).split(":")[0])
Training step 1 had non-finite query inputs
"""

import keras
import tensorflow as tf

REASONS = ("support inputs", "query inputs", "targets", "loss", "gradients")
MODES = ("raise", "skip")
STEP_KEY, REASONS_KEY, SKIPPED_KEY = "non_finite_step", "non_finite_reasons", "skipped_steps"


class NonFiniteError(FloatingPointError):
    """A training step met a NaN or infinite input, loss or gradient; it changed nothing."""


def check_mode(mode):
    if mode not in MODES:
        raise ValueError(f"`on_non_finite` must be one of {MODES}, got {mode!r}.")
    return mode


def all_finite(tensors):
    """A scalar bool: every floating-point tensor in `tensors` (a list, `None`s skipped) is finite."""
    checks = [tf.reduce_all(tf.math.is_finite(t)) for t in tensors
              if t is not None and t.dtype.is_floating]
    return tf.reduce_all(tf.stack(checks)) if checks else tf.constant(True)


def non_finite_flags(support_x, query_x, targets, loss, gradients):
    """`[len(REASONS)]` float32: 1 where that part of the step is non-finite, on any replica."""
    gradients = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in gradients]
    parts = ([support_x], [query_x], targets, [loss], gradients)
    flags = tf.stack([1.0 - tf.cast(all_finite(part), tf.float32) for part in parts])
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:  # every replica takes the same decision
        flags = tf.minimum(context.all_reduce(tf.distribute.ReduceOp.SUM, flags), 1.0)
    return flags


def finite_stand_in(data):
    """`data` (a structure of tensors) with every NaN or infinite value replaced by 0."""
    def stand_in(value):
        if value is None:
            return None
        value = tf.convert_to_tensor(value)
        if not value.dtype.is_floating:
            return value
        return tf.where(tf.math.is_finite(value), value, tf.zeros_like(value))

    return tf.nest.map_structure(stand_in, data)


def reasons_text(bitmask):
    """The non-finite parts named by a bitmask of `REASONS`, as words."""
    names = [name for bit, name in enumerate(REASONS) if int(bitmask) >> bit & 1]
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


def snapshot(variables):
    """Copies of `variables`' values, read before the step changes them."""
    return [tf.identity(v) for v in variables]


def restore_unless(ok, variables, saved):
    """Puts back the values of `saved` where the step is not `ok` (no control flow, so any replica may run it)."""
    for variable, value in zip(variables, saved, strict=True):
        variable.assign(tf.where(ok, tf.convert_to_tensor(variable), value))


def apply_if(ok, optimizer, gradients, variables):
    """`optimizer.apply_gradients` when `ok` (the same on every replica), nothing otherwise.

    As Keras' `LossScaleOptimizer`, the condition runs in a cross-replica
    context under a strategy that merges replicas (an optimizer's update
    cannot run under a replica's own `cond`).
    """
    pairs = [(g, v) for g, v in zip(gradients, variables, strict=True) if g is not None]
    if not optimizer.built:  # variables cannot be created under a condition
        optimizer.build([v for _, v in pairs])

    def apply(pairs):
        optimizer.apply_gradients(pairs)

    if not tf.distribute.has_strategy() or tf.__internal__.distribute.strategy_supports_no_merge_call():
        tf.cond(ok, lambda: apply(pairs), lambda: None)
        return

    def across_replicas(distribution, ok, pairs):
        first = distribution.experimental_local_results(ok)[0]  # all replicas agree
        tf.cond(first, lambda: distribution.extended.call_for_each_replica(apply, args=(pairs,)), lambda: None)

    tf.distribute.get_replica_context().merge_call(across_replicas, args=(ok, pairs))


class StepGuard(keras.metrics.Metric):
    """The guard's record of an epoch: skipped steps, and the first non-finite step and its reasons."""

    def __init__(self, name="step_guard", **kwargs):
        super().__init__(name=name, **kwargs)
        self.skipped = self.add_variable((), "zeros", "float32", aggregation="only_first_replica", name="skipped")
        self.first_step = self.add_variable((), "zeros", "float32", aggregation="only_first_replica",
                                            name="first_step")
        self.first_reasons = self.add_variable((), "zeros", "float32", aggregation="only_first_replica",
                                               name="first_reasons")

    def update_state(self, flags, step):
        bad = tf.reduce_max(flags) > 0
        bitmask = tf.reduce_sum(flags * tf.constant([2.0**bit for bit in range(len(REASONS))]))
        first = bad & tf.equal(self.first_step, 0.0)
        self.skipped.assign_add(tf.cast(bad, tf.float32))
        self.first_reasons.assign(tf.where(first, bitmask, self.first_reasons))
        self.first_step.assign(tf.where(first, tf.cast(step, tf.float32), self.first_step))

    def result(self):
        return {SKIPPED_KEY: tf.identity(self.skipped), STEP_KEY: tf.identity(self.first_step),
                REASONS_KEY: tf.identity(self.first_reasons)}


def error_for(step, bitmask, skipped_mode_hint=True):
    """The `NonFiniteError` of a step."""
    return NonFiniteError(
        f"Training step {int(step)} had non-finite {reasons_text(bitmask)}: the step changed no weight, optimizer "
        "slot or batch-normalisation statistic. Check the episodes for NaN/Inf values, or lower the learning "
        "rates if the loss diverged."
        + (" To skip such steps and go on, construct the learner with on_non_finite=\"skip\"; the logs then count "
           "them as `skipped_steps`." if skipped_mode_hint else "")
    )
