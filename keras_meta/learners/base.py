"""`MetaLearner`: what every learner shares.

A learner is a `keras.Model` whose input is an episode batch
`{"support_x": [B, S, ...], "support_y": [B, S], "query_x": [B, Q, ...]}` and
whose output is the query predictions `[B, Q, ...]`; it trains with
`compile` + `fit` and turns one task's support set into a plain Keras model
with `adapt(support_x, support_y)`.
"""

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


class MetaLearner(keras.Model):
    """Base class of learners: episode in, query predictions out, plus `adapt`."""

    def adapt(self, support_x, support_y):
        """Returns a plain Keras model fitted to one task's support set."""
        raise NotImplementedError
