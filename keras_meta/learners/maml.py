"""Model-Agnostic Meta-Learning (Finn et al. 2017), second- or first-order.

MAML learns initial weights from which a few gradient steps on a task's
support set give a good model for that task. Each training step adapts the
wrapped model to every task of the batch (`inner_steps` SGD steps of size
`inner_learning_rate`, functionally), computes the loss of the adapted weights
on the query set, and back-propagates it through the adaptation into the
initial weights (second order); `first_order=True` drops the second-order
terms (FOMAML), `truncation=T` keeps them for the last T steps only.

Example:

>>> import keras, keras_meta
>>> learner = keras_meta.learners.MAML(keras_meta.models.conv4(num_classes=5),
...                                    inner_learning_rate=0.4, inner_steps=1)
>>> learner.compile(optimizer=keras.optimizers.Adam(1e-3),
...                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
...                 metrics=["sparse_categorical_accuracy"])
>>> learner.fit(sampler.dataset(batch_size=32), steps_per_epoch=100)  # doctest: +SKIP
>>> adapted = learner.adapt(support_x, support_y, steps=3)  # a plain Keras model  # doctest: +SKIP
"""

import keras

from keras_meta.learners import inner_loop
from keras_meta.learners.base import positive_number
from keras_meta.learners.gradient_based import GradientMetaLearner
from keras_meta.learners.learnable_optimizer import LearnableOptimizer


@keras.saving.register_keras_serializable(package="keras_meta")
class MAML(GradientMetaLearner):
    """MAML over any Keras model.

    Args:
        model: a built Keras model (its output is the prediction for one
            task, e.g. `N` logits for N-way classification).
        inner_learning_rate: the inner SGD step size (the initial value of
            the learned rates with `learn_inner_learning_rate=True`).
        inner_steps: inner steps during meta-training.
        eval_inner_steps: inner steps for `evaluate`, `predict` and `adapt`.
        first_order: ignore second-order terms (FOMAML).
        truncation: back-propagate through only the last `truncation` inner
            steps (the earlier ones are treated first-order).
        inner_clipnorm: clip each inner step's gradients to this global norm.
        adapt_layers: the layers that adapt in the inner loop (default all).
        learn_inner_learning_rate: `False`, or `"parameter"`, `"tensor"`,
            `"scalar"` (or `True` = `"parameter"`): learn the inner rates with a
            `LearnableOptimizer` (Meta-SGD).
        inner_loss: the support-set loss (default: the compiled loss).
        multi_step_loss: meta-train on the mean of the query losses after
            every inner step, not only the last (the multi-step loss of
            Antoniou et al. 2019, "How to train your MAML"): the initial
            weights become good after 1 step and after `inner_steps`.
    """

    def __init__(self, model, inner_learning_rate=0.4, inner_steps=1, eval_inner_steps=None, first_order=False,
                 truncation=None, inner_clipnorm=None, adapt_layers=None, learn_inner_learning_rate=False,
                 inner_loss=None, multi_step_loss=False, **kwargs):
        super().__init__(model, inner_steps=inner_steps, eval_inner_steps=eval_inner_steps,
                         adapt_layers=adapt_layers, inner_loss=inner_loss, **kwargs)
        self.inner_learning_rate = positive_number(
            "inner_learning_rate", inner_learning_rate,
            "0 never adapts and a negative rate climbs the support loss")
        self.first_order = bool(first_order)
        if truncation is not None:
            if self.first_order:
                raise ValueError("`truncation` has no effect with `first_order=True` (no inner step is "
                                 "differentiated); pass one of them.")
            truncation = self._check_steps("truncation", truncation)
        self.truncation = truncation
        if inner_clipnorm is not None and not inner_clipnorm > 0:
            raise ValueError(f"`inner_clipnorm` must be positive or None, got {inner_clipnorm!r}.")
        self.inner_clipnorm = None if inner_clipnorm is None else float(inner_clipnorm)
        self.multi_step_loss = bool(multi_step_loss)
        if learn_inner_learning_rate is True:
            learn_inner_learning_rate = "parameter"
        self.learn_inner_learning_rate = learn_inner_learning_rate or False
        self.inner_optimizer = None
        if self.learn_inner_learning_rate:
            self.inner_optimizer = LearnableOptimizer(self.inner_learning_rate, self.learn_inner_learning_rate,
                                                      name="inner_optimizer")
            adapted = [v for v, adapts in zip(self.model.trainable_variables, self.adapt_mask) if adapts]
            self.inner_optimizer.build_for([v.shape for v in adapted])
        self.built = True

    def adapt_task(self, weights, state, support_x, support_y, steps, training, return_trajectory=False):
        return inner_loop.gradient_descent(
            self.task_loss(support_x, support_y, state),
            weights,
            steps,
            learning_rate=self.inner_learning_rate,
            update_fn=None if self.inner_optimizer is None else self.inner_optimizer.call,
            adapt_mask=self.adapt_mask,
            first_order=self.first_order,
            truncation=self.truncation,
            clipnorm=self.inner_clipnorm,
            return_trajectory=return_trajectory,
        )

    def training_trajectory(self, weights, state, support_x, support_y):
        if not self.multi_step_loss:
            return super().training_trajectory(weights, state, support_x, support_y)
        return self.adapt_task(weights, state, support_x, support_y, self.inner_steps, True, return_trajectory=True)

    def get_config(self):
        config = super().get_config()
        config.update(
            inner_learning_rate=self.inner_learning_rate,
            first_order=self.first_order,
            truncation=self.truncation,
            inner_clipnorm=self.inner_clipnorm,
            learn_inner_learning_rate=self.learn_inner_learning_rate,
            multi_step_loss=self.multi_step_loss,
        )
        return config
