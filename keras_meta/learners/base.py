"""`MetaLearner`: what every learner shares.

A learner is a `keras.Model` whose input is an episode batch
`{"support_x": [B, S, ...], "support_y": [B, S], "query_x": [B, Q, ...]}` and
whose output is the query predictions `[B, Q, ...]`; it trains with
`compile` + `fit` and turns one task's support set into a plain Keras model
with `adapt(support_x, support_y)`.
"""

import inspect
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_meta.data.episodes import QUERY_X, SUPPORT_X, SUPPORT_Y


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
    if support_x.shape.rank is not None and support_x.shape.rank < 2:
        raise ValueError(f"`support_x` must be [tasks, examples, ...], got shape {support_x.shape}.")
    if support_x.shape[:2].is_fully_defined() and support_y.shape[:2].is_fully_defined():
        if support_x.shape[:2] != support_y.shape[:2]:
            raise ValueError(
                f"`support_x` {support_x.shape} and `support_y` {support_y.shape} disagree on "
                "[tasks, examples]; give one label per support example."
            )
    return support_x, support_y, query_x


def class_labels(support_y):
    """Checks that episode labels are integers and returns them as int32."""
    if not support_y.dtype.is_integer:
        raise ValueError(
            f"`support_y` must hold integer class labels 0..N-1 (or -1 for padding), got dtype "
            f"{support_y.dtype.name}."
        )
    return tf.cast(support_y, tf.int32)


def check_support_set(support_x, support_y):
    """Validates one task's support set for `adapt`; returns arrays and `num_classes`."""
    support_x, support_y = np.asarray(support_x), np.asarray(support_y)
    if support_y.ndim != 1 or len(support_x) != len(support_y) or len(support_y) == 0:
        raise ValueError(
            f"`adapt` takes one task: support_x [S, ...] and support_y [S], got shapes "
            f"{support_x.shape} and {support_y.shape}."
        )
    if not np.issubdtype(support_y.dtype, np.integer):
        raise ValueError(f"`support_y` must hold integer class labels, got dtype {support_y.dtype}.")
    if support_y.min() < 0:
        raise ValueError(f"`support_y` must use labels 0..N-1, got {support_y.min()}; `adapt` takes no padding.")
    num_classes = int(support_y.max()) + 1
    missing = np.setdiff1d(np.arange(num_classes), support_y)
    if missing.size:
        raise ValueError(
            f"`support_y` must use labels 0..N-1 with every class present; classes {missing.tolist()} "
            f"have no example (labels seen: {np.unique(support_y).tolist()})."
        )
    return support_x, support_y, num_classes


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


class MetaLearner(keras.Model):
    """Base class of learners: episode in, query predictions out, plus `adapt`."""

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
            if any(isinstance(cb, keras.callbacks.BackupAndRestore) for cb in getattr(callbacks, "callbacks", callbacks)):
                warnings.warn("keras.callbacks.BackupAndRestore starts the episode stream again at its first episode "
                              "when it restores a run; keras_meta.callbacks.BackupAndRestore continues it.",
                              stacklevel=2)
            x = stream.distribute(self.distribute_strategy, start)
        return super().fit(x, y, *args, **kwargs)

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
        # Across workers, Keras averages each replica's logs with `strategy.reduce("MEAN", value, axis=0)`,
        # which fails on scalars: give them a leading axis of one there, to be averaged over.
        if across_workers(self.distribute_strategy):
            step = step_function

            def step_function(data):
                return tf.nest.map_structure(lambda v: v[None] if v.shape.rank == 0 else v, step(data))

        return super()._make_function(step_function)

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
