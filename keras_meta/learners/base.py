"""`MetaLearner`: what every learner shares.

A learner is a `keras.Model` whose input is an episode batch
`{"support_x": [B, S, ...], "support_y": [B, S], "query_x": [B, Q, ...]}` and
whose output is the query predictions `[B, Q, ...]`; it trains with
`compile` + `fit` and turns one task's support set into a plain Keras model
with `adapt(support_x, support_y)`.
"""

import contextlib
import inspect
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_meta.data import checks
from keras_meta.data.episode_format import QUERY_X, SUPPORT_X, SUPPORT_Y
from keras_meta.learners import guard, inner_loop
from keras_meta.ops.xla import in_xla_context


def replicas():
    """Replicas of the current `tf.distribute` strategy (1 outside one)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def unpack_episode(inputs):
    """Returns `(support_x, support_y, query_x)` from an episode dict, checked."""
    if not isinstance(inputs, dict) or not {SUPPORT_X, SUPPORT_Y, QUERY_X} <= set(inputs):
        got = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
        raise ValueError(
            f"A learner takes an episode dict with keys {[SUPPORT_X, SUPPORT_Y, QUERY_X]}, got {got}. "
            "Build episodes with keras_meta.data.EpisodeSampler."
        )
    support_x, support_y, query_x = (tf.convert_to_tensor(inputs[k]) for k in (SUPPORT_X, SUPPORT_Y, QUERY_X))
    for name, value in ((SUPPORT_X, support_x), (SUPPORT_Y, support_y), (QUERY_X, query_x)):
        if value.shape.rank is not None and value.shape.rank < 2:
            raise ValueError(f"`{name}` must be [tasks, examples, ...], got shape {value.shape}.")
    tasks, query_tasks = support_x.shape[:1], query_x.shape[:1]
    if tasks.is_fully_defined() and query_tasks.is_fully_defined() and tasks != query_tasks:
        raise ValueError(
            f"`support_x` {support_x.shape} and `query_x` {query_x.shape} hold different numbers of tasks "
            f"({tasks[0]} and {query_tasks[0]}); each task of a batch needs its support and its query set."
        )
    if not (tasks.is_fully_defined() and query_tasks.is_fully_defined()):
        query_x = require(tf.equal(tf.shape(support_x)[0], tf.shape(query_x)[0]),
                          "`support_x` and `query_x` hold different numbers of tasks ({} and {}); each task of a "
                          "batch needs its support and its query set.",
                          lambda: [tf.shape(support_x)[0], tf.shape(query_x)[0]], query_x)
    if support_x.shape[:2].is_fully_defined() and support_y.shape[:2].is_fully_defined():
        if support_x.shape[:2] != support_y.shape[:2]:
            raise ValueError(
                f"`support_x` {support_x.shape} and `support_y` {support_y.shape} disagree on "
                "[tasks, examples]; give one label per support example."
            )
    return support_x, support_y, query_x


def require(condition, template, values, checked):
    """`checks.require` (a clear `ValueError` when `condition` fails), dropped under XLA."""
    if in_xla_context():
        return checked
    return checks.require(condition, template, values, checked)


def graph_error(error):
    """The `ValueError` or `NonFiniteError` a `tf.errors.InvalidArgumentError` of a learner's check stands for."""
    message = checks.error_message(error)
    if message is not None:
        return ValueError(message)
    if inner_loop.NON_FINITE_INNER_LOSS in getattr(error, "message", str(error)):
        return guard.NonFiniteError(inner_loop.NON_FINITE_INNER_LOSS + ".")
    return None


def check_support_labels(support_y, num_outputs=None):
    """Checks the support labels of a batch of episodes `[B, S]` in the graph.

    Every task must use labels `0..N-1` with each class present (-1 marks a
    padded slot) and hold at least one labelled example; a model with
    `num_outputs` classes needs episodes of exactly that many ways, or of at
    most that many when padded (variable-way episodes).
    """
    labels = tf.cast(support_y, tf.int32)
    if in_xla_context():  # XLA drops the checks, and their label-sized shapes would make the labels constants
        return labels
    ways = tf.reduce_max(labels, axis=-1) + 1  # [B]
    depth = tf.maximum(tf.reduce_max(ways), 1)
    counts = tf.reduce_sum(tf.one_hot(labels, depth, dtype=tf.int32), axis=-2)  # [B, depth]; -1 counts nowhere
    missing = (counts == 0) & (tf.range(depth)[None, :] < ways[:, None])
    bad = tf.reduce_any(missing, axis=-1) | (tf.reduce_min(labels, axis=-1) < -1) | (ways < 1)

    def shown_values():  # the first bad task and its labels
        task = tf.argmax(tf.cast(bad, tf.int32), output_type=tf.int32)
        return [task, tf.sort(tf.unique(labels[task]).y)]

    labels = require(~tf.reduce_any(bad),
            "`support_y` of task {} holds the labels {}: an episode's support labels must be 0..N-1 with every "
            "class present (-1 marks a padded slot) and at least one labelled example. Build episodes with "
            "keras_meta.data.EpisodeSampler, or remap the labels of each task to 0..N-1.",
            shown_values, labels)
    if num_outputs is None or num_outputs == 1:
        return labels
    padded = tf.reduce_min(labels) < 0
    most = tf.reduce_max(ways)
    return require((most == num_outputs) | (padded & (most <= num_outputs)),
            f"The model has {num_outputs} outputs but an episode has {{}} ways: a model meta-learned on N-way "
            f"episodes must output N logits (with variable-way episodes, the largest number of ways). Give the "
            f"model {num_outputs} outputs for {num_outputs}-way episodes, or sample episodes of that many ways.",
            lambda: [most], labels)


def check_output_labels(support_y, num_outputs):
    """Checks support labels `[B, S]` that index a model's `num_outputs` outputs (a fixed label space).

    Each task needs at least one labelled example; labels are `0..num_outputs-1`
    (-1 marks a padded slot), and need not all be present.
    """
    labels = tf.cast(support_y, tf.int32)
    if in_xla_context() or num_outputs is None:
        return labels
    lowest, highest = tf.reduce_min(labels), tf.reduce_max(labels)
    labelled = tf.reduce_all(tf.reduce_max(labels, axis=-1) >= 0)
    return require((lowest >= -1) & (highest < num_outputs) & labelled,
            f"The support labels (`support_y`) hold {{}} (lowest) and {{}} (highest), but the model has "
            f"{num_outputs} outputs: with `episode_labels=False` labels index the model's outputs, "
            f"0..{num_outputs - 1} (-1 marks a padded slot), and every task needs a labelled example.",
            lambda: [lowest, highest], labels)


def check_query_labels(y, y_pred):
    """`y`, checked: integer query labels must name a class of the predictions `y_pred [..., C]`."""
    if y is None or y_pred is None or not tf.as_dtype(y.dtype).is_integer or y_pred.shape.rank is None \
            or y_pred.shape.rank != y.shape.rank + 1:
        return y
    if in_xla_context():
        return y
    classes = tf.shape(y_pred)[-1]
    labels = tf.cast(y, tf.int32)
    lowest, highest = tf.reduce_min(labels), tf.reduce_max(labels)
    return require((lowest >= 0) & (highest < classes),
            "The query labels (`y`) hold {} (lowest) and {} (highest), but the episode has {} ways: query labels "
            "must be 0..N-1, the classes of the episode's support set (or the model's outputs).",
            lambda: [lowest, highest, classes], y)


def class_labels(support_y):
    """Checks that episode labels are integers `0..N-1` (or -1 for padding) and returns them as int32."""
    if not support_y.dtype.is_integer:
        raise ValueError(
            f"`support_y` must hold integer class labels 0..N-1 (or -1 for padding), got dtype "
            f"{support_y.dtype.name}."
        )
    return check_support_labels(support_y)


def check_support_set(support_x, support_y, regression=False, every_class=True):
    """Validates one task's support set for `adapt`; returns `(support_x, support_y, num_classes)`.

    Class labels are integers `0..N-1` (with `every_class`, each present);
    with `regression=True` float targets `[S, ...]` pass too, and
    `num_classes` is then None.
    """
    support_x, support_y = np.asarray(support_x), np.asarray(support_y)
    integer = np.issubdtype(support_y.dtype, np.integer)
    targets = regression and np.issubdtype(support_y.dtype, np.floating)
    kinds = "integer class labels or [S, ...] float targets" if regression else "integer class labels"
    if support_x.ndim == 0 or support_y.ndim == 0 or len(support_x) != len(support_y) or len(support_y) == 0 \
            or (support_y.ndim != 1 and not targets):
        raise ValueError(f"`adapt` takes one task: support_x [S, ...] and support_y [S] {kinds}; got shapes "
                         f"{support_x.shape} and {support_y.shape}.")
    if not (integer or targets):
        raise ValueError(f"`support_y` must hold {kinds}, got dtype {support_y.dtype}.")
    num_classes = None
    if integer:
        if support_y.min() < 0:
            raise ValueError(f"`support_y` must hold class labels >= 0 (labels 0..N-1, got {support_y.min()}): "
                             "`adapt` takes no padding.")
        num_classes = int(support_y.max()) + 1
        missing = np.setdiff1d(np.arange(num_classes), support_y)
        if every_class and missing.size:
            raise ValueError(
                f"`support_y` must use labels 0..N-1 with every class present; classes {missing.tolist()} "
                f"have no example (labels seen: {np.unique(support_y).tolist()})."
            )
    for name, values in (("support_x", support_x), ("support_y", support_y)):
        if np.issubdtype(values.dtype, np.floating) and not np.all(np.isfinite(values)):
            raise guard.NonFiniteError(f"`{name}` holds NaN or infinite values; `adapt` needs finite support data.")
    return support_x, support_y, num_classes


def positive_number(name, value, why="it would make training a no-op or go the wrong way"):
    """`value` as a float, checked to be a finite number above zero (`why` says what else would happen)."""
    if not checks.is_number(value) or value <= 0:
        raise ValueError(f"`{name}` must be a positive number, got {value!r}: {why}.")
    return float(value)


def across_workers(strategy):
    """True for a `MultiWorkerMirroredStrategy` with more than one worker."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and strategy.extended._in_multi_worker_mode()


def first_replica_values(batch):
    """The first local replica's part of a (possibly distributed) batch, dtypes kept."""
    def first(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return tf.distribute.get_strategy().experimental_local_results(value)[0]
        return value

    return tf.nest.map_structure(first, batch)


GRAPH_CYCLE_HINT = (
    "With TensorFlow's oneDNN CPU kernels, a convolution with a bias followed by batch normalisation can make "
    "the graph of a second-order meta-gradient cyclic once rewritten (seen with learned inner rates). "
    "Give convolutions followed by batch normalisation `use_bias=False` (the normalisation's offset is their "
    "bias; keras_meta's backbones do), or set TF_ENABLE_ONEDNN_OPTS=0 before TensorFlow is imported."
)


@contextlib.contextmanager
def explained_graph_cycles():
    """Adds what to do to TensorFlow's "nodes in a cycle" error of a training step."""
    try:
        yield
    except tf.errors.InvalidArgumentError as error:
        if "nodes in a cycle" not in str(error):
            raise
        message = f"{error.message}\n{GRAPH_CYCLE_HINT}"
        raise tf.errors.InvalidArgumentError(error.node_def, error.op, message) from error


class MetaLearner(keras.Model):
    """Base class of learners: episode in, query predictions out, plus `adapt`.

    Args:
        on_non_finite: what a training step with a NaN or infinite input,
            loss or gradient does (it never changes a weight, an optimizer
            slot or a batch-norm statistic): `"raise"` stops `fit` with a
            `NonFiniteError` naming the step and what was non-finite;
            `"skip"` goes on and counts such steps as `skipped_steps` in the
            logs (see `keras_meta.learners.guard`).
    """

    def __init__(self, on_non_finite="raise", **kwargs):
        super().__init__(**kwargs)
        self.on_non_finite = on_non_finite
        self._in_train_step = False

    @property
    def on_non_finite(self):
        """`"raise"` or `"skip"`: what a non-finite training step does; setting it takes effect at the next step."""
        return self._on_non_finite

    @on_non_finite.setter
    def on_non_finite(self, mode):
        self._on_non_finite = guard.check_mode(mode)
        self.train_function = None  # traced for the old mode

    def reset_metrics(self):
        super().reset_metrics()
        if getattr(self, "_step_guard", None) is not None:
            self._step_guard.reset_state()

    # -- training step ----------------------------------------------------------

    def train_step(self, data):
        """One guarded update: `compute_update` gives the loss and gradients, `apply_update` applies them.

        The batch-normalisation statistics the step moves are put back, and
        no gradient is applied, when any input, target, the loss or a
        gradient is not finite (see `on_non_finite`).
        """
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        state = [v for v in self.non_trainable_variables if keras.backend.is_float_dtype(v.dtype)]
        saved = guard.snapshot(state)
        self._in_train_step = True
        try:  # on finite stand-ins for non-finite inputs: no op fails on them (a solve, say) before the check
            loss, predictions, gradients = self.compute_update(guard.finite_stand_in(x), guard.finite_stand_in(y),
                                                               sample_weight)
        finally:
            self._in_train_step = False
        return self.apply_update(x, y, sample_weight, loss, predictions, gradients, state, saved)

    def compute_update(self, x, y, sample_weight):
        """`(loss, query predictions, gradients)` of one batch; gradients match `self.trainable_variables`.

        The gradients are this replica's share of the step: the compiled
        optimizer sums the replicas' shares.
        """
        raise NotImplementedError

    def apply_update(self, x, y, sample_weight, loss, predictions, gradients, state, saved):
        """Applies `gradients` and updates the loss and metrics, unless the step is not finite.

        `state` are the variables the forward pass may have moved (batch-norm
        statistics) and `saved` their values before it.
        """
        support_x, support_y, query_x = unpack_episode(x)
        targets = [t for t in (support_y, y) if t is not None and tf.as_dtype(t.dtype).is_floating]
        # A LossScaleOptimizer skips overflowing (scaled) gradients itself, and lowers its scale.
        scaled = isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer)
        flags = guard.non_finite_flags(support_x, query_x, targets, loss, [] if scaled else gradients)
        ok = tf.equal(tf.reduce_max(flags), 0.0)
        if self.on_non_finite == "raise":  # after a non-finite step, a multi-step execution changes nothing more
            ok = ok & tf.equal(self._step_guard.first_step, 0.0)
        guard.restore_unless(ok, state, saved)
        step = self.optimizer.iterations + 1
        guard.apply_if(ok, self.optimizer, gradients, self.trainable_variables)

        def update_metrics():  # a skipped step leaves the loss and metrics as they were
            self._loss_tracker.update_state(loss * replicas(), sample_weight=tf.shape(predictions)[0])
            self.compute_metrics(x, y, predictions, sample_weight=sample_weight)

        tf.cond(ok, update_metrics, lambda: None)
        logs = self.get_metrics_result()
        self._step_guard.update_state(flags, step)
        guard_logs = self._step_guard.result()
        keys = [guard.SKIPPED_KEY] if self.on_non_finite == "skip" else [guard.STEP_KEY, guard.REASONS_KEY]
        return {**logs, **{key: guard_logs[key] for key in keys}}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Keras' `compute_loss`, after checking that integer query labels name the episode's classes."""
        if y is not None and y_pred is not None:
            y = check_query_labels(tf.convert_to_tensor(y), tf.convert_to_tensor(y_pred))
        return super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)

    def fit(self, x=None, y=None, *args, **kwargs):
        """Keras' `fit`; an episode stream (`sampler.dataset(batch_size)`) is also split and resumed.

        Under a `tf.distribute` strategy every replica and worker draws its
        own share of each global batch of tasks (none twice, none discarded).
        With a callback that restores a run (`keras_meta.callbacks.BackupAndRestore`),
        the stream continues after the last episode batch of the restored run.
        """
        stream = getattr(x, "episode_stream", None)
        if stream is not None:
            arguments = inspect.signature(keras.Model.fit).bind(self, x, y, *args, **kwargs).arguments
            callbacks = arguments.get("callbacks") or ()
            restorers = [cb for cb in getattr(callbacks, "callbacks", callbacks) if hasattr(cb, "stream_resumed")]
            start = max([cb.restored_stream_position() for cb in restorers], default=0)
            for restorer in restorers:
                restorer.stream_resumed = True
            given = getattr(callbacks, "callbacks", callbacks)
            if any(isinstance(cb, keras.callbacks.BackupAndRestore) for cb in given):
                warnings.warn("keras.callbacks.BackupAndRestore starts the episode stream again at its first episode "
                              "when it restores a run; keras_meta.callbacks.BackupAndRestore continues it.",
                              stacklevel=2)
            x = stream.distribute(self.distribute_strategy, start)
        with explained_graph_cycles():
            return super().fit(x, y, *args, **kwargs)

    def train_on_batch(self, *args, **kwargs):
        """Keras' `train_on_batch`; a graph-cycle error of the step says what to do."""
        with explained_graph_cycles():
            return super().train_on_batch(*args, **kwargs)

    def predict_on_batch(self, x):
        """Keras' `predict_on_batch`, with one row per episode under a `tf.distribute` strategy too.

        Keras runs the whole batch on every replica and returns one copy of the
        predictions per replica; a learner returns one.
        """
        outputs = super().predict_on_batch(x)
        copies = self.distribute_strategy.num_replicas_in_sync
        if copies > 1:
            outputs = tf.nest.map_structure(lambda value: value[: len(value) // copies], outputs)
        return outputs

    def _make_function(self, step_function):
        training = step_function == self.train_step
        if training and getattr(self, "_step_guard", None) is None:
            with self.distribute_strategy.scope():
                # Not an attribute Keras tracks: its values join the training logs only (see `apply_update`).
                object.__setattr__(self, "_step_guard", guard.StepGuard())
        # Across workers, Keras averages each replica's logs with `strategy.reduce("MEAN", value, axis=0)`,
        # which fails on scalars: give them a leading axis of one there, to be averaged over.
        if across_workers(self.distribute_strategy):
            step = step_function

            def step_function(data):
                return tf.nest.map_structure(lambda v: v[None] if v.shape.rank == 0 else v, step(data))

        return self._checked(super()._make_function(step_function), training)

    def make_predict_function(self, force=False):
        super().make_predict_function(force)
        if not getattr(self.predict_function, "_checked", False):
            self.predict_function = self._checked(self.predict_function, training=False)
        return self.predict_function

    def _checked(self, function, training):
        """`function` (a train, test or predict function) raising the learners' errors as Python errors.

        A failed in-graph check of the episodes becomes its `ValueError`; in
        training, with `on_non_finite="raise"`, a non-finite step becomes a
        `NonFiniteError` naming it.
        """

        def checked(iterator):
            try:
                logs = function(iterator)
            except tf.errors.InvalidArgumentError as error:
                translated = graph_error(error)
                if translated is None:
                    raise
                raise translated from None
            if training and self.on_non_finite == "raise":
                step, reasons = (float(np.asarray(logs.pop(key)).reshape(-1)[0])
                                 for key in (guard.STEP_KEY, guard.REASONS_KEY))
                if step > 0:
                    raise guard.error_for(step, reasons)
            return logs

        checked._checked = True
        return checked

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras builds a distributed model from `strategy.reduce("MEAN", first_batch)`: integer labels become
        # floats and, across workers, the reduction fails on per-replica values. Learners build from the
        # first local replica's part of the first batch instead, which has the right dtypes and shapes.
        if self._distribute_strategy is None:
            return None
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = next(batches)
                break
        with self.distribute_strategy.scope():
            data_batch = first_replica_values(data_batch)
            self._symbolic_build(data_batch=data_batch)
        return None

    def _resolve_auto_jit_compile(self):
        """What `compile(jit_compile="auto")` (the default) means for every learner: XLA or not, per device.

        CPUs: no XLA, measured 0.08-0.5x as fast as graph mode for every
        learner on a 2-core CPU (`benchmarks/xla.py`, docs/gradient_based_learners.md, "XLA").
        GPUs: no XLA either until measured there (run `benchmarks/xla.py` on
        the GPU and pass `jit_compile=True` where it is faster); XLA also drops
        the inner loop's NaN check and pads metric learners' logits to the
        support size. TPUs: Keras' own choice (they run compiled programs).
        `jit_compile=True` or `False` overrides it.
        """
        if any(device.device_type == "TPU" for device in tf.config.list_logical_devices()):
            return super()._resolve_auto_jit_compile()
        return False

    def adapt(self, support_x, support_y):
        """Returns a plain Keras model fitted to one task's support set."""
        raise NotImplementedError

    def get_config(self):
        config = super().get_config()
        config["on_non_finite"] = self.on_non_finite
        return config
