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

import threading

import keras
import tensorflow as tf

from keras_meta.data.checks import integer_argument
from keras_meta.learners import inner_loop
from keras_meta.learners.base import positive_number
from keras_meta.learners.gradient_based import GradientMetaLearner
from keras_meta.learners.gradient_transforms import GradientTransform
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
        adapt_layers: the layers that adapt in the inner loop: `"all"`
            (default), `"head"` (the last layer with weights) or layer names.
        learn_inner_learning_rate: `False`, or `"parameter"`, `"tensor"`,
            `"scalar"` (or `True` = `"parameter"`): learn the inner rates with a
            `LearnableOptimizer` (Meta-SGD).
        inner_transform: `None`, `"kronecker"` or `"meta_curvature"` (or a
            `GradientTransform`): precondition each inner gradient with
            meta-learned matrices, identity at first (Kronecker-factored or
            meta-curvature; `keras_meta.learners.gradient_transforms`).
        inner_loss: the support-set loss (default: the compiled loss).
        multi_step_loss: meta-train on the mean of the query losses after
            every inner step, not only the last (the multi-step loss of
            Antoniou et al. 2019, "How to train your MAML"): the initial
            weights become good after 1 step and after `inner_steps`.
        multi_step_loss_annealing_steps: with `multi_step_loss`, move the
            losses' weights from equal to the last step's alone over this
            many training steps (the earlier steps' weights fall linearly to
            0; MAML++'s annealed importance). `None`: equal weights throughout.
        first_order_steps: derivative-order annealing (MAML++): the first
            `first_order_steps` training steps (the optimizer's iterations)
            are first order, the later ones second order. Both are traced in
            the one training function; nothing retraces when the order changes.
        per_step_inner_learning_rates: with `learn_inner_learning_rate`, each
            of the `inner_steps` inner steps has learned rates of its own
            (MAML++'s per-layer, per-step rates with `"tensor"`).
        per_step_batch_norm: every BatchNormalization layer gets a learned
            scale and offset for each inner step's forward pass and one for
            the adapted weights (`inner_steps + 1` sets; MAML++'s per-step
            batch-norm weights). They are meta-trained and do not adapt;
            passes beyond `inner_steps` use the last set.
        recompute_inner_steps: keep only the weights between inner steps and
            recompute each step's activations during back-propagation
            (gradient checkpointing): the same meta-gradient, with memory that
            hardly grows with `inner_steps`, for about one more forward and
            backward pass of the support set per step. Second order only.
    """

    def __init__(self, model, inner_learning_rate=0.4, inner_steps=1, eval_inner_steps=None, first_order=False,
                 truncation=None, inner_clipnorm=None, adapt_layers=None, learn_inner_learning_rate=False,
                 inner_loss=None, multi_step_loss=False, recompute_inner_steps=False,
                 multi_step_loss_annealing_steps=None, first_order_steps=None, per_step_inner_learning_rates=False,
                 per_step_batch_norm=False, inner_transform=None, **kwargs):
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
            truncation = integer_argument("truncation", truncation, minimum=0)
        self.truncation = truncation
        if inner_clipnorm is not None and not inner_clipnorm > 0:
            raise ValueError(f"`inner_clipnorm` must be positive or None, got {inner_clipnorm!r}.")
        self.inner_clipnorm = None if inner_clipnorm is None else float(inner_clipnorm)
        self.multi_step_loss = bool(multi_step_loss)
        if recompute_inner_steps and self.first_order:
            raise ValueError("`recompute_inner_steps` has no effect with `first_order=True` (first-order steps keep "
                             "no activations for the meta-gradient); pass one of them.")
        self.recompute_inner_steps = bool(recompute_inner_steps)
        if multi_step_loss_annealing_steps is not None:
            if not self.multi_step_loss:
                raise ValueError("`multi_step_loss_annealing_steps` anneals the multi-step loss's weights: pass "
                                 "`multi_step_loss=True` too.")
            multi_step_loss_annealing_steps = integer_argument(
                "multi_step_loss_annealing_steps", multi_step_loss_annealing_steps, minimum=0)
        self.multi_step_loss_annealing_steps = multi_step_loss_annealing_steps
        if first_order_steps is not None:
            if self.first_order:
                raise ValueError("`first_order_steps` switches to second order after that many steps; with "
                                 "`first_order=True` there is no second order to switch to. Pass one of them.")
            first_order_steps = integer_argument("first_order_steps", first_order_steps, minimum=0)
        self.first_order_steps = first_order_steps
        self._branch = threading.local()  # `.first_order`: the first-order branch of `first_order_steps` is traced
        if per_step_inner_learning_rates and not learn_inner_learning_rate:
            raise ValueError("`per_step_inner_learning_rates` gives each inner step learned rates of its own: pass "
                             "`learn_inner_learning_rate` (e.g. \"tensor\") too.")
        self.per_step_inner_learning_rates = bool(per_step_inner_learning_rates)
        if learn_inner_learning_rate is True:
            learn_inner_learning_rate = "parameter"
        self.learn_inner_learning_rate = learn_inner_learning_rate or False
        self.per_step_batch_norm = bool(per_step_batch_norm)
        self.batch_norm_steps = self.per_step_batch_norm_weights() if self.per_step_batch_norm else []
        # A name, or a transform's config (an instance as attribute would be tracked as a layer of the learner).
        self.inner_transform = (keras.saving.serialize_keras_object(inner_transform)
                                if isinstance(inner_transform, GradientTransform) else inner_transform)
        self.inner_optimizer = None
        if self.learn_inner_learning_rate or inner_transform is not None:
            self.inner_optimizer = LearnableOptimizer(
                self.inner_learning_rate, self.learn_inner_learning_rate or None,
                steps=max(self.inner_steps, 1) if self.per_step_inner_learning_rates else None,
                transform=inner_transform, name="inner_optimizer")
            adapted = [v for v, adapts in zip(self.model.trainable_variables, self.adapt_mask, strict=True) if adapts]
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
            first_order=self.first_order or self.tracing_first_order_branch(),
            truncation=None if self.tracing_first_order_branch() else self.truncation,
            clipnorm=self.inner_clipnorm,
            return_trajectory=return_trajectory,
            recompute=self.recompute_inner_steps and training and not self.tracing_first_order_branch(),
            step_weights=self.with_step_batch_norm if self.batch_norm_steps else None,
        )

    def per_step_batch_norm_weights(self):
        """`[(position in model.trainable_variables, variable [inner_steps + 1, C])]` for each BN scale and offset.

        Each starts as copies of the layer's own; those stop adapting (the
        per-step sets replace them in every pass).
        """
        positions = {id(v): i for i, v in enumerate(self.model.trainable_variables)}
        layers = [layer for layer in self.model._flatten_layers(include_self=False)
                  if isinstance(layer, keras.layers.BatchNormalization)]
        weights = [(layer, name, getattr(layer, name)) for layer in layers for name in ("gamma", "beta")
                   if getattr(layer, name, None) is not None and id(getattr(layer, name)) in positions]
        if not weights:
            raise ValueError("`per_step_batch_norm=True` needs a model with trainable BatchNormalization layers; "
                             "this one has none.")
        per_step = []
        for layer, name, variable in weights:
            sets = self.add_weight(shape=(self.inner_steps + 1, *variable.shape), initializer="zeros",
                                   dtype=variable.dtype, name=f"{layer.name}_{name}_per_step")
            sets.assign(tf.tile(tf.convert_to_tensor(variable)[None], [self.inner_steps + 1, 1]))
            self.adapt_mask[positions[id(variable)]] = False
            per_step.append((positions[id(variable)], sets))
        return per_step

    def with_step_batch_norm(self, weights, step):
        """`weights` with each batch-norm scale and offset replaced by inner step `step`'s set."""
        weights = list(weights)
        for position, sets in self.batch_norm_steps:
            weights[position] = tf.convert_to_tensor(sets)[min(step, self.inner_steps)]
        return weights

    def task_meta_gradients(self, support_x, support_y, query_x, query_y, query_weight):
        meta_gradients = super().task_meta_gradients
        task = (support_x, support_y, query_x, query_y, query_weight)
        if self.first_order_steps is None:
            return meta_gradients(*task)

        def first_order():
            self._branch.first_order = True  # per thread: MirroredStrategy traces each replica in its own
            try:
                return meta_gradients(*task)
            finally:
                self._branch.first_order = False

        return tf.cond(self.training_steps_done() >= self.first_order_steps, lambda: meta_gradients(*task),
                       first_order)

    def tracing_first_order_branch(self):
        return getattr(self._branch, "first_order", False)

    def training_steps_done(self):
        """The optimizer's iterations: the training steps taken (saved with the learner); 0 before compile."""
        return self.optimizer.iterations if getattr(self, "optimizer", None) is not None else tf.constant(0, "int64")

    def trajectory_loss_weights(self, count):
        if self.multi_step_loss_annealing_steps is None or count == 1:
            return super().trajectory_loss_weights(count)
        progress = tf.minimum(tf.cast(self.training_steps_done(), tf.float32)
                              / max(self.multi_step_loss_annealing_steps, 1), 1.0)
        earlier = (1.0 - progress) / count
        return [earlier] * (count - 1) + [1.0 - (count - 1) * earlier]

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
            recompute_inner_steps=self.recompute_inner_steps,
            multi_step_loss_annealing_steps=self.multi_step_loss_annealing_steps,
            first_order_steps=self.first_order_steps,
            per_step_inner_learning_rates=self.per_step_inner_learning_rates,
            per_step_batch_norm=self.per_step_batch_norm,
            inner_transform=self.inner_transform,
        )
        return config
