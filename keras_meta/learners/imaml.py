"""Implicit MAML (Rajeswaran et al. 2019): meta-gradients from the implicit function theorem.

The inner loop minimises the support loss plus a proximal term
`regularization / 2 * ||phi - theta||^2` and is never back-propagated through.
At its solution `phi`, the meta-gradient is
`(I + H / regularization)^-1 grad L_query(phi)` with `H` the Hessian of the
support loss; conjugate gradient solves that system with Hessian-vector
products only. Memory does not grow with the number of inner steps.

Example:

>>> import keras, keras_meta
>>> learner = keras_meta.learners.iMAML(keras_meta.models.mlp((1,), (40, 40), num_outputs=1),
...                                     inner_learning_rate=0.01, inner_steps=10, regularization=1.0)
>>> learner.compile(optimizer="adam", loss="mse")
"""

import keras
import tensorflow as tf

from keras_meta.data.checks import integer_argument
from keras_meta.learners import inner_loop
from keras_meta.learners.base import positive_number
from keras_meta.learners.gradient_based import GradientMetaLearner
from keras_meta.ops import batch_norm


@keras.saving.register_keras_serializable(package="keras_meta")
class iMAML(GradientMetaLearner):  # noqa: N801 (the method's name)
    """Implicit MAML over any Keras model.

    Args:
        model: a built Keras model.
        inner_learning_rate: step size of the inner gradient descent.
        inner_steps: inner steps during meta-training.
        eval_inner_steps: inner steps for `evaluate`, `predict` and `adapt`.
        regularization: the proximal strength `lambda`.
        cg_steps: conjugate-gradient iterations for the implicit gradient.
        inner_loss: the support-set loss (default: the compiled loss); the
            query loss of the implicit gradient is the same loss.

    Every weight adapts: an `adapt_layers` other than `"all"` is refused.
    """

    def __init__(self, model, inner_learning_rate=0.01, inner_steps=10, eval_inner_steps=None, regularization=1.0,
                 cg_steps=5, inner_loss=None, **kwargs):
        if kwargs.pop("adapt_layers", None) not in (None, "all"):
            raise ValueError("iMAML adapts every weight (its implicit meta-gradient is that of a solution over all "
                             "weights), so it takes no `adapt_layers` but \"all\". To adapt only some layers use "
                             "`MAML` or `ANIL`, whose `adapt_layers` is differentiated through.")
        super().__init__(model, inner_steps=inner_steps, eval_inner_steps=eval_inner_steps, inner_loss=inner_loss,
                         **kwargs)
        if not regularization > 0:
            raise ValueError(f"`regularization` must be positive, got {regularization!r}.")
        self.inner_learning_rate = positive_number(
            "inner_learning_rate", inner_learning_rate,
            "0 never adapts and a negative rate climbs the support loss")
        self.regularization = float(regularization)
        self.cg_steps = integer_argument("cg_steps", cg_steps, minimum=0)
        if self.cg_steps == 0:
            raise ValueError("`cg_steps` must be at least 1: with 0 conjugate-gradient iterations the implicit "
                             "meta-gradient is zero and training changes nothing.")
        self.built = True

    def proximal_term(self, start):
        def term(weights):
            squares = [tf.reduce_sum(tf.square(w - s)) for w, s in zip(weights, start, strict=True)]
            return 0.5 * self.regularization * tf.add_n(squares)

        return term

    def adapt_task(self, weights, state, support_x, support_y, steps, training):
        start = [tf.stop_gradient(w) for w in weights]
        loss_fn = self.task_loss(support_x, support_y, state, extra_loss=self.proximal_term(start))
        return inner_loop.gradient_descent(loss_fn, start, steps, learning_rate=self.inner_learning_rate)

    def implicit_gradient(self, adapted, support_loss, query_grads):
        """`(I + H / lambda)^-1 query_grads` by conjugate gradient, `H` the support loss' Hessian."""

        def matvec(vector):
            hessian_vector = inner_loop.hessian_vector_product(support_loss, adapted, vector)
            return [v + hv / self.regularization for v, hv in zip(vector, hessian_vector, strict=True)]

        return inner_loop.conjugate_gradient(matvec, query_grads, self.cg_steps)

    def task_meta_gradients(self, support_x, support_y, query_x, query_y, query_weight):
        """iMAML's meta-gradient of one task: the implicit gradient at the proximal solution."""
        weights, state = self.meta_weights(), self.model_state()
        with batch_norm.fused_batch_norm():
            adapted = self.adapt_task(weights, state, support_x, support_y, self.inner_steps, True)
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(adapted)
                predictions, new_state = self.functional_query(adapted, query_x, state)
                query_loss = inner_loop.mean_loss(self.resolved_inner_loss(), query_y, predictions, query_weight)
            query_grads = tape.gradient(query_loss, adapted)
            meta_grads = self.implicit_gradient(adapted, self.task_loss(support_x, support_y, state), query_grads)
        return meta_grads, predictions, new_state

    def get_config(self):
        config = super().get_config()
        config.update(inner_learning_rate=self.inner_learning_rate, regularization=self.regularization,
                      cg_steps=self.cg_steps)
        config.pop("adapt_layers", None)
        return config
