"""Reptile (Nichol et al. 2018): move the meta-weights toward each task's adapted weights.

Each training step adapts the wrapped model to every task of the batch with
`inner_steps` steps of a Keras `SGD` or `Adam` update rule (fresh optimizer
state per task, run functionally, so tasks adapt in parallel and on any
number of replicas), then gives the compiled optimizer the meta-gradient
`theta - mean(phi)`. Compiled with `keras.optimizers.SGD(learning_rate=epsilon)`,
that is Reptile's interpolation `theta <- theta + epsilon * (mean(phi) - theta)`;
a Keras learning-rate schedule gives a scheduled (e.g. linearly annealed) meta
step size. No second-order terms, no query loss in the update: the query set
only reports the loss and metrics of the adapted weights.

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

from keras_meta.data.checks import integer_argument
from keras_meta.learners import inner_loop
from keras_meta.learners.base import positive_number
from keras_meta.learners.gradient_based import GradientMetaLearner
from keras_meta.learners.inner_optimizers import functional_optimizer
from keras_meta.ops import batch_norm


@keras.saving.register_keras_serializable(package="keras_meta")
class Reptile(GradientMetaLearner):
    """Reptile over any Keras model, with a Keras `SGD` or `Adam` inner optimizer.

    Args:
        model: a built Keras model.
        inner_optimizer: a Keras `SGD` or `Adam` optimizer (or its name) whose
            update rule the inner steps follow; default `Adam(1e-3, beta_1=0)`
            as in the paper.
        inner_steps: inner steps during meta-training.
        eval_inner_steps: inner steps for `evaluate`, `predict` and `adapt`.
        adapt_layers: the layers that adapt: `"all"` (default), `"head"`
            (the last layer with weights) or layer names.
        inner_loss: the support-set loss (default: the compiled loss).
    """

    def __init__(self, model, inner_optimizer=None, inner_steps=5, eval_inner_steps=None, adapt_layers=None,
                 inner_loss=None, **kwargs):
        if inner_optimizer is None:
            inner_optimizer = keras.optimizers.Adam(1e-3, beta_1=0.0)
        inner_optimizer = keras.optimizers.get(inner_optimizer)
        self._inner_update = functional_optimizer(inner_optimizer)  # checked before anything is built
        if not isinstance(self._inner_update.learning_rate, keras.optimizers.schedules.LearningRateSchedule):
            positive_number("inner_optimizer's learning_rate", self._inner_update.learning_rate,
                            "0 never adapts and a negative rate climbs the support loss")
        if integer_argument("inner_steps", inner_steps, minimum=0) == 0:
            raise ValueError("Reptile's `inner_steps` must be at least 1: with 0 the adapted weights are the "
                             "meta-weights and training changes nothing.")
        super().__init__(model, inner_steps=inner_steps, eval_inner_steps=eval_inner_steps,
                         adapt_layers=adapt_layers, inner_loss=inner_loss, **kwargs)
        self._inner_optimizer_config = keras.optimizers.serialize(inner_optimizer)
        self.built = True

    @property
    def inner_optimizer(self):
        """A new Keras optimizer with the inner optimizer's configuration (the rule the inner steps follow)."""
        return keras.optimizers.deserialize(self._inner_optimizer_config)

    def adapt_task(self, weights, state, support_x, support_y, steps, training):
        loss_fn = self.task_loss(support_x, support_y, state)
        adapted_ids = [i for i, adapts in enumerate(self.adapt_mask) if adapts]
        weights = [tf.stop_gradient(w) for w in weights]
        params = [weights[i] for i in adapted_ids]
        optimizer_state = self._inner_update.init(params)
        for _ in range(steps):
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(params)
                loss = loss_fn(with_params(weights, adapted_ids, params))
            grads = inner_loop.dense_gradients(tape.gradient(loss, params), params)
            params, optimizer_state = self._inner_update.step(params, grads, optimizer_state)
        return with_params(weights, adapted_ids, params)

    def task_meta_gradients(self, support_x, support_y, query_x, query_y, query_weight):
        """Reptile's meta-gradient of one task: `theta - phi`."""
        weights, state = self.meta_weights(), self.model_state()
        with batch_norm.fused_batch_norm():
            adapted = self.adapt_task(weights, state, support_x, support_y, self.inner_steps, True)
            predictions, new_state = self.functional_query(adapted, query_x, state)
        return [w - a for w, a in zip(weights, adapted, strict=True)], predictions, new_state

    def get_config(self):
        config = super().get_config()
        config["inner_optimizer"] = self._inner_optimizer_config
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["inner_optimizer"] = keras.optimizers.deserialize(config["inner_optimizer"])
        return super().from_config(config)


def with_params(weights, ids, params):
    """`weights` with the entries at `ids` replaced by `params`."""
    weights = list(weights)
    for i, param in zip(ids, params, strict=True):
        weights[i] = param
    return weights
