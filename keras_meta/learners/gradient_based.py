"""`GradientMetaLearner`: the base of learners that adapt a model by gradient steps.

It wraps any built Keras model (Sequential, functional or subclassed) and is
itself a `keras.Model`: its input is an episode batch and its output the query
predictions of the model *after* adapting to each task's support set. A
subclass says how one task adapts (`adapt_task`; the optional hooks are listed
in docs/writing_a_learner.md); this base runs it over the tasks of a batch,
keeps the wrapped model's batch-normalisation statistics well defined, and
turns one task into a plain Keras model (`adapt`).

Batch normalisation (documented behaviour):

* the inner loop and the query pass run the model in training mode, so batch
  normalisation uses the batch statistics of the task's own data (support
  set while adapting, query set for the predictions), as in MAML;
* adaptation never changes the moving statistics; during meta-training they
  track the query batches only (averaged over the tasks of a batch);
* `adapt()` returns a model whose moving statistics are the support set's
  statistics under the adapted weights, so its inference-mode predictions
  use the task's own statistics too.
"""

import os

import keras
import numpy as np
import tensorflow as tf

from keras_meta._map import map_fn
from keras_meta.data.checks import integer_argument
from keras_meta.learners import guard, inner_loop
from keras_meta.learners.base import (
    MetaLearner,
    check_output_labels,
    check_support_labels,
    check_support_set,
    replicas,
    unpack_episode,
)
from keras_meta.ops import batch_norm
from keras_meta.ops.functional import clone_model, functional_call

MAX_AUTO_PARALLEL_TASKS = 8  # each task at once holds its own graph's activations


def usable_cores():
    """The CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def auto_parallel_tasks():
    """What `parallel_tasks="auto"` is where a step is traced: tasks at once, one per CPU core.

    The usable cores are shared by the replicas of this machine (a
    `MirroredStrategy` over CPUs) and at most `MAX_AUTO_PARALLEL_TASKS` tasks
    run at once; where a GPU or TPU is visible its ops run there, one task at
    a time (the device splits each op itself).

    >>> auto_parallel_tasks() >= 1
    True
    """
    if tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"):
        return 1
    strategy = tf.distribute.get_strategy()
    local_replicas = len(strategy.extended.worker_devices) if tf.distribute.has_strategy() else 1
    return max(1, min(MAX_AUTO_PARALLEL_TASKS, usable_cores() // local_replicas))


def parallel_tasks_argument(value):
    """`"auto"` or a positive integer, checked before anything is built."""
    if isinstance(value, str) and value == "auto":
        return value
    try:
        return integer_argument("parallel_tasks", value)
    except ValueError:
        raise ValueError(f'`parallel_tasks` must be "auto" or a positive integer, got {value!r}.') from None


def check_model(model):
    if not isinstance(model, keras.Model) or not model.built:
        raise ValueError(
            "`model` must be a built keras.Model (give it an Input shape or call it once), "
            f"got {type(model).__name__}{' (not built)' if isinstance(model, keras.Model) else ''}."
        )
    if not model.trainable_variables:
        raise ValueError("`model` has no trainable weights to meta-learn.")
    return model


def adapted_variables_mask(model, adapt_layers):
    """One bool per trainable variable of `model`: does it adapt in the inner loop?

    `adapt_layers` is None (all) or layer names of the model, as `adapt_layers_argument` returns them.
    """
    if adapt_layers is None:
        return [True] * len(model.trainable_variables)
    adapted = set()
    for name in adapt_layers:
        try:
            layer = model.get_layer(name)
        except ValueError:
            names = [sub.name for sub in model.layers]
            raise ValueError(f"`adapt_layers` names {name!r}, but the model's layers are {names}.") from None
        if not layer.trainable_variables:
            raise ValueError(f"`adapt_layers`: layer {layer.name!r} has no trainable weights to adapt.")
        adapted.update(id(v) for v in layer.trainable_variables)
    return [id(v) in adapted for v in model.trainable_variables]


def adapt_layers_argument(model, adapt_layers):
    """`adapt_layers` as layer names, or None for all: `"all"` and `"head"` are words unless a layer has that name."""
    if adapt_layers is None:
        return None
    if isinstance(adapt_layers, str) and adapt_layers in ("all", "head") \
            and adapt_layers not in [layer.name for layer in getattr(model, "layers", [])]:
        return None if adapt_layers == "all" else [last_weighted_layer(model)]
    return [layer if isinstance(layer, str) else layer.name
            for layer in ([adapt_layers] if isinstance(adapt_layers, (str, keras.layers.Layer)) else adapt_layers)]


def last_weighted_layer(model):
    """The name of the last layer of `model` that has trainable weights (the head)."""
    for layer in reversed(model.layers):
        if layer.trainable_variables:
            return layer.name
    raise ValueError("`model` has no layer with trainable weights.")


class GradientMetaLearner(MetaLearner):
    """Base class: a wrapped model adapted to each task by gradient steps.

    Args:
        model: a built Keras model mapping inputs to predictions.
        inner_steps: gradient steps on the support set during meta-training.
        eval_inner_steps: steps for `evaluate`, `predict` and `adapt`
            (default: `inner_steps`).
        adapt_layers: the layers that adapt in the inner loop: `"all"` (the
            default, also `None`), `"head"` (the last layer with weights; the
            same words as `keras_meta.lite`), or names (or layer objects) of layers.
        inner_loss: the support-set loss (default: the loss given to `compile`).
        parallel_tasks: tasks of a batch processed at once (memory grows with
            it; results do not change). `"auto"` (default): one per CPU core
            (at most 8), 1 on a GPU or TPU (`auto_parallel_tasks()`); `1`
            holds one task's graph at a time, the least memory
            (docs/gradient_based_learners.md, "Speed on CPUs").
        episode_labels: `True` (default): integer labels are an N-way
            episode's classes, 0..N-1 with every class present, and the model
            has N outputs (checked in the graph). `False`: labels index the
            model's outputs, a label space shared by all tasks (items of a
            recommender, say); they are checked only to lie within it.
    """

    def __init__(self, model, inner_steps=1, eval_inner_steps=None, adapt_layers=None, inner_loss=None,
                 parallel_tasks="auto", episode_labels=True, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(episode_labels, (bool, np.bool_)):
            raise ValueError(f"`episode_labels` must be True or False, got {episode_labels!r}.")
        self.episode_labels = bool(episode_labels)
        self.parallel_tasks = parallel_tasks_argument(parallel_tasks)
        self.model = check_model(model)
        self.inner_steps = integer_argument("inner_steps", inner_steps, minimum=0)
        self.eval_inner_steps = self.inner_steps if eval_inner_steps is None else eval_inner_steps
        self.adapt_layers = adapt_layers_argument(model, adapt_layers)
        self.adapt_mask = adapted_variables_mask(model, self.adapt_layers)
        self.inner_loss = None if inner_loss is None else keras.losses.get(inner_loss)

    @property
    def eval_inner_steps(self):
        """Inner steps of `evaluate`, `predict` and `adapt`; setting it takes effect at once."""
        return self._eval_inner_steps

    @eval_inner_steps.setter
    def eval_inner_steps(self, steps):
        self._eval_inner_steps = integer_argument("eval_inner_steps", steps, minimum=0)
        self.test_function = self.predict_function = None  # traced with the old number of steps

    # -- what a subclass defines (docs/writing_a_learner.md) -----------------
    # Required: `adapt_task`. Optional hooks, with defaults below:
    # `training_trajectory`, `trajectory_loss_weights`, `task_meta_gradients`,
    # and `get_config` for the subclass's own arguments. Subclasses may call
    # `task_loss`, `functional_query`, `meta_weights`, `model_state` and
    # `resolved_inner_loss`; `compute_update` is `MetaLearner`'s training-step
    # contract (shared with the embedding learners), implemented here over the
    # tasks of a batch; methods starting with `_` are the base's own.

    def adapt_task(self, weights, state, support_x, support_y, steps, training):
        """Adapted weights for one task (unbatched support set)."""
        raise NotImplementedError

    # -- shared machinery -----------------------------------------------------

    def resolved_inner_loss(self):
        """The support-set loss: `inner_loss`, else the single loss given to `compile`."""
        if self.inner_loss is not None:
            return self.inner_loss
        loss = getattr(self, "loss", None)
        if loss is None or isinstance(loss, (dict, list, tuple)):
            raise ValueError(
                f"{type(self).__name__} needs one loss for its inner loop: compile it with a single `loss=` "
                "(e.g. SparseCategoricalCrossentropy(from_logits=True)) or pass `inner_loss=`."
            )
        return keras.losses.get(loss)

    def task_loss(self, support_x, support_y, state, extra_loss=None):
        return inner_loop.support_loss(
            self.model, self.resolved_inner_loss(), support_x, support_y, state=state, extra_loss=extra_loss,
            check=not self._in_train_step,  # the training step checks its whole update
        )

    def meta_weights(self):
        return [tf.convert_to_tensor(v) for v in self.model.trainable_variables]

    def model_state(self):
        return [tf.convert_to_tensor(v) for v in self.model.non_trainable_variables]

    def _map_tasks(self, fn, elems, signature):
        """`fn` over the tasks of a batch, `parallel_tasks` at a time.

        One task at a time keeps memory at one task's activations, as when a
        peer library loops over tasks in Python, and leaves the cores to the
        ops; a task per core keeps the cores busy between the small ops of
        few-shot tasks. The outputs keep the order of the tasks.
        """
        at_once = auto_parallel_tasks() if self.parallel_tasks == "auto" else self.parallel_tasks
        return map_fn(fn, elems, fn_output_signature=signature, parallel_iterations=at_once)

    def _prediction_spec(self):
        outputs = getattr(self.model, "outputs", None)
        return tf.TensorSpec(None, outputs[0].dtype if outputs else self.model.compute_dtype)

    def _state_spec(self):
        return [tf.TensorSpec(v.shape, v.dtype) for v in self.model.non_trainable_variables]

    def _adapt_and_predict(self, support_x, support_y, query_x, steps, training):
        """Query predictions `[B, Q, ...]` and the wrapped model's new state, per task."""
        weights, state = self.meta_weights(), self.model_state()

        def one_task(task):
            task_support_x, task_support_y, task_query_x = task
            with batch_norm.fused_batch_norm():
                adapted = self.adapt_task(weights, state, task_support_x, task_support_y, steps, training)
                return self.functional_query(adapted, task_query_x, state)

        return self._map_tasks(one_task, (support_x, support_y, query_x), (self._prediction_spec(), self._state_spec()))

    def functional_query(self, adapted, query_x, state):
        """`(predictions, new_state)` of the adapted weights on one task's query set (training mode)."""
        return functional_call(self.model, adapted, query_x, training=True, state=state, return_state=True)

    def _checked_episode(self, inputs):
        """`(support_x, support_y, query_x)`, with class labels checked against the episode and the model."""
        support_x, support_y, query_x = unpack_episode(inputs)
        if support_y.dtype.is_integer:
            outputs = getattr(self.model, "outputs", None)
            num_outputs = outputs[0].shape[-1] if outputs else None
            num_outputs = num_outputs if isinstance(num_outputs, int) else None
            if self.episode_labels:
                support_y = check_support_labels(support_y, num_outputs)
            else:
                support_y = check_output_labels(support_y, num_outputs)
        return support_x, support_y, query_x

    def call(self, inputs, training=False):
        support_x, support_y, query_x = self._checked_episode(inputs)
        steps = self.inner_steps if training else self.eval_inner_steps
        predictions, states = self._adapt_and_predict(support_x, support_y, query_x, steps, bool(training))
        if training:
            self._track_query_statistics(states)
        return predictions

    def compute_update(self, x, y, sample_weight):
        """Per task, adapt and take the meta-gradient; their mean over the batch's tasks is the update.

        Each task's meta-gradient is computed and reduced before the next task
        starts, so memory holds one task's graph, not the whole batch's.
        """
        support_x, support_y, query_x = self._checked_episode(x)
        weights = tf.ones(tf.shape(query_x)[:2]) if sample_weight is None else sample_weight
        variables = self.trainable_variables

        def one_task(task):
            return self.task_meta_gradients(*task)

        signature = ([tf.TensorSpec(v.shape, v.dtype) for v in variables], self._prediction_spec(), self._state_spec())
        gradients, predictions, states = self._map_tasks(one_task, (support_x, support_y, query_x, y, weights),
                                                        signature)
        self._track_query_statistics(states)
        tasks = tf.cast(tf.shape(query_x)[0], tf.float32)
        context = tf.distribute.get_replica_context()
        if context is not None and replicas() > 1:  # replicas may hold unequal shares of a batch (or none)
            tasks = context.all_reduce(tf.distribute.ReduceOp.SUM, tasks)
        share = [tf.reduce_sum(g, 0) / tf.cast(tasks, g.dtype) for g in gradients]  # summed over replicas: the mean
        loss = self.compute_loss(x=x, y=y, y_pred=predictions, sample_weight=sample_weight, training=True)
        return loss, predictions, share

    def task_meta_gradients(self, support_x, support_y, query_x, query_y, query_weight):
        """`(meta-gradients, query predictions, new state)` of one task.

        The meta-gradients, one per `self.trainable_variables`, are those of
        the task's query loss through the adaptation (MAML); Reptile and iMAML
        override this.
        """
        with tf.GradientTape() as tape:
            loss, predictions, new_state = self._task_query_loss(support_x, support_y, query_x, query_y, query_weight)
            loss = loss * replicas()  # compute_loss divides by the replicas; train_step takes the mean itself
        variables = self.trainable_variables
        grads = tape.gradient(loss, variables)  # (ZERO for unconnected ones fails on Keras variables: str dtypes)
        grads = [tf.zeros(v.shape, v.dtype) if g is None else g for g, v in zip(grads, variables, strict=True)]
        return grads, predictions, new_state

    def _task_query_loss(self, support_x, support_y, query_x, query_y, query_weight):
        """`(query loss, query predictions, new state)` of one task after `inner_steps` of adaptation.

        The loss is the mean of the compiled query losses of the weights that
        `training_trajectory` returns (by default only the adapted ones),
        weighted by `trajectory_loss_weights`; the predictions and state are
        those of the last.
        """
        state = self.model_state()
        losses = []
        with batch_norm.fused_batch_norm():
            for adapted in self.training_trajectory(self.meta_weights(), state, support_x, support_y):
                predictions, new_state = self.functional_query(adapted, query_x, state)
                losses.append(self.compute_loss(y=query_y[None], y_pred=predictions[None],
                                                sample_weight=query_weight[None], training=True))
        weights = self.trajectory_loss_weights(len(losses))
        total = tf.add_n([tf.cast(weight, loss.dtype) * loss for weight, loss in zip(weights, losses, strict=True)])
        return total, predictions, new_state

    def trajectory_loss_weights(self, count):
        """The weights (summing to 1) of the query losses of `training_trajectory`'s `count` weights: equal."""
        return [1.0 / count] * count

    def training_trajectory(self, weights, state, support_x, support_y):
        """The adapted weights whose query losses make up the meta-loss: `[adapted after inner_steps]`."""
        return [self.adapt_task(weights, state, support_x, support_y, self.inner_steps, True)]

    def _track_query_statistics(self, states):
        """Moves the wrapped model's non-trainable state to the tasks' query-pass values.

        Floating-point state (batch-norm moving statistics) becomes the mean
        over the tasks of the batch; across `tf.distribute` replicas, over the
        tasks of every replica, so all replicas hold the same value.
        """
        context = tf.distribute.get_replica_context()
        synchronize = context is not None and context.num_replicas_in_sync > 1
        for variable, values in zip(self.model.non_trainable_variables, states, strict=True):
            if variable.dtype in ("float16", "bfloat16", "float32", "float64"):
                if synchronize:
                    total = tf.reduce_sum(values, axis=0)
                    count = tf.cast(tf.shape(values)[0], values.dtype)
                    total, count = context.all_reduce(tf.distribute.ReduceOp.SUM, [total, count])
                    variable.assign(total / count)
                else:
                    variable.assign(tf.reduce_mean(values, axis=0))
            else:
                variable.assign(values[0])

    def adapt(self, support_x, support_y, steps=None):
        """A plain Keras model adapted to one task's support set.

        Args:
            support_x: `[S, ...]` support inputs of one task.
            support_y: `[S]` integer labels `0..N-1`, or float regression
                targets `[S, ...]`.
            steps: inner steps (default `eval_inner_steps`).

        The returned model has the wrapped model's architecture and the adapted
        weights; its batch-normalisation moving statistics are the support
        set's (see the module docstring). It loads without keras-meta.
        """
        support_x, support_y, _ = check_support_set(support_x, support_y, regression=True, every_class=False)
        steps = self.eval_inner_steps if steps is None else integer_argument("steps", steps, minimum=0)
        adapted = self._adapted_weights(tf.constant(support_x), tf.constant(support_y), steps)
        return self._plain_model(adapted, support_x)

    def _adapted_weights(self, support_x, support_y, steps):
        @tf.function
        def run(sx, sy):
            with batch_norm.fused_batch_norm():
                return self.adapt_task(self.meta_weights(), self.model_state(), sx, sy, steps, False)

        try:
            return [w.numpy() for w in run(support_x, support_y)]
        except tf.errors.InvalidArgumentError as error:
            if inner_loop.NON_FINITE_INNER_LOSS not in getattr(error, "message", str(error)):
                raise
            raise guard.NonFiniteError(inner_loop.NON_FINITE_INNER_LOSS + ".") from None

    def _plain_model(self, adapted, support_x):
        """A copy of the wrapped model with `adapted` weights and the support set's batch statistics."""
        model = clone_model(self.model, adapted)
        with batch_norm.batch_statistics_become_moving(model):
            weights = [tf.convert_to_tensor(v) for v in model.trainable_variables]
            _, state = functional_call(model, weights, support_x, training=True, return_state=True)
        for variable, value in zip(model.non_trainable_variables, state, strict=True):
            variable.assign(value)
        return model

    def get_config(self):
        config = super().get_config()
        config.update(
            model=keras.saving.serialize_keras_object(self.model),
            inner_steps=self.inner_steps,
            eval_inner_steps=self.eval_inner_steps,
            adapt_layers=self.adapt_layers,
            parallel_tasks=self.parallel_tasks,
            episode_labels=self.episode_labels,
            inner_loss=None if self.inner_loss is None else keras.saving.serialize_keras_object(self.inner_loss),
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["model"] = keras.saving.deserialize_keras_object(config["model"])
        if config.get("inner_loss") is not None:
            config["inner_loss"] = keras.saving.deserialize_keras_object(config["inner_loss"])
        return cls(**config)
