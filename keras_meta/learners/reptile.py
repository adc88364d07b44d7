"""Reptile (Nichol et al. 2018): move the meta-weights toward each task's adapted weights.

Each training step adapts the wrapped model to every task of the batch with
`inner_steps` steps of any Keras optimizer (fresh optimizer state per task),
then gives the compiled optimizer the meta-gradient `theta - mean(phi)`.
Compiled with `keras.optimizers.SGD(learning_rate=epsilon)`, that is Reptile's
interpolation `theta <- theta + epsilon * (mean(phi) - theta)`; a Keras
learning-rate schedule gives a scheduled (e.g. linearly annealed) meta step
size. No second-order terms, no query loss in the update: the query set only
reports the loss and metrics of the adapted weights.

Example:

>>> import keras, keras_meta
>>> learner = keras_meta.learners.Reptile(
...     keras_meta.models.conv4(num_classes=5), inner_steps=5,
...     inner_optimizer=keras.optimizers.Adam(1e-3, beta_1=0.0))
>>> meta_step = keras.optimizers.schedules.PolynomialDecay(1.0, decay_steps=10000, end_learning_rate=0.0)
>>> learner.compile(optimizer=keras.optimizers.SGD(meta_step),
...                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
...                 metrics=["sparse_categorical_accuracy"])
"""

import keras
import tensorflow as tf

from keras_meta.learners import inner_loop
from keras_meta.learners.gradient_based import GradientMetaLearner


@keras.saving.register_keras_serializable(package="keras_meta")
class Reptile(GradientMetaLearner):
    """Reptile over any Keras model, with any Keras inner optimizer.

    Args:
        model: a built Keras model.
        inner_optimizer: a Keras optimizer (or its name) for the inner steps;
            default `Adam(1e-3, beta_1=0)` as in the paper.
        inner_steps: inner steps during meta-training.
        eval_inner_steps: inner steps for `evaluate`, `predict` and `adapt`.
        adapt_layers: the layers that adapt (default all).
        inner_loss: the support-set loss (default: the compiled loss).
    """

    def __init__(self, model, inner_optimizer=None, inner_steps=5, eval_inner_steps=None, adapt_layers=None,
                 inner_loss=None, **kwargs):
        if kwargs.get("parallel_tasks", 1) != 1:
            raise ValueError("Reptile adapts one task at a time (`parallel_tasks=1`): tasks share scratch weights.")
        super().__init__(model, inner_steps=inner_steps, eval_inner_steps=eval_inner_steps,
                         adapt_layers=adapt_layers, inner_loss=inner_loss, **kwargs)
        if inner_optimizer is None:
            inner_optimizer = keras.optimizers.Adam(1e-3, beta_1=0.0)
        self.inner_optimizer = keras.optimizers.get(inner_optimizer)
        # Keras optimizers update variables, so each task adapts a scratch copy of the adapted weights
        # (plain tf.Variables: not weights of the learner, never saved), with the optimizer state reset.
        adapted = [v for v, adapts in zip(self.model.trainable_variables, self.adapt_mask) if adapts]
        self._scratch = [tf.Variable(v.value, trainable=False) for v in adapted]
        self.inner_optimizer.build(self._scratch)
        self._fresh_optimizer_state = [tf.constant(v.numpy()) for v in self.inner_optimizer.variables]
        self.built = True

    def adapt_task(self, weights, state, support_x, support_y, steps, training):
        loss_fn = self.task_loss(support_x, support_y, state)
        adapted_ids = [i for i, adapts in enumerate(self.adapt_mask) if adapts]
        for variable, value in zip(self.inner_optimizer.variables, self._fresh_optimizer_state):
            variable.assign(value)
        for scratch, i in zip(self._scratch, adapted_ids):
            scratch.assign(tf.stop_gradient(weights[i]))
        weights = [tf.stop_gradient(w) for w in weights]
        for _ in range(steps):
            for scratch, i in zip(self._scratch, adapted_ids):
                weights[i] = scratch.read_value()
            params = [weights[i] for i in adapted_ids]
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(params)
                loss = loss_fn(weights)
            self.inner_optimizer.apply(inner_loop.dense_gradients(tape.gradient(loss, params), params), self._scratch)
        for scratch, i in zip(self._scratch, adapted_ids):
            weights[i] = scratch.read_value()
        return weights

    def task_meta_gradients(self, support_x, support_y, query_x, query_y, query_weight):
        """Reptile's meta-gradient of one task: `theta - phi`."""
        weights, state = self.meta_weights(), self.model_state()
        with inner_loop.fused_batch_norm():
            adapted = self.adapt_task(weights, state, support_x, support_y, self.inner_steps, True)
            predictions, new_state = self.functional_query(adapted, query_x, state)
        return [w - a for w, a in zip(weights, adapted)], predictions, new_state

    def get_config(self):
        config = super().get_config()
        config["inner_optimizer"] = keras.optimizers.serialize(self.inner_optimizer)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["inner_optimizer"] = keras.optimizers.deserialize(config["inner_optimizer"])
        return super().from_config(config)
