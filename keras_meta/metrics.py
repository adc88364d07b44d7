"""Ranking metrics for next-item prediction: Acc@1, Recall@k and mean reciprocal rank.

Each takes integer targets `[...]` and scores `[..., num_items]` (logits or
probabilities), any leading axes, so they work on episode outputs `[B, Q, N]`.

Example:

>>> import keras, numpy as np
>>> from keras_meta import metrics
>>> mrr = metrics.MeanReciprocalRank()
>>> mrr.update_state(np.array([2]), np.array([[0.1, 0.7, 0.2]]))  # the target is ranked 2nd
>>> float(mrr.result())
0.5
"""

import keras
from keras import ops


def target_rank(y_true, y_pred):
    """1-based rank of the target's score among all scores (ties count in the target's favour)."""
    y_pred = ops.convert_to_tensor(y_pred)
    y_true = ops.cast(ops.convert_to_tensor(y_true), "int32")
    target_score = ops.take_along_axis(y_pred, ops.expand_dims(y_true, -1), axis=-1)
    return 1 + ops.sum(ops.cast(y_pred > target_score, "int32"), axis=-1)


def reciprocal_rank(y_true, y_pred):
    """`1 / rank` of the target for each example."""
    return 1.0 / ops.cast(target_rank(y_true, y_pred), "float32")


@keras.saving.register_keras_serializable(package="keras_meta")
class MeanReciprocalRank(keras.metrics.MeanMetricWrapper):
    """Mean of `1 / rank` of the target item (MRR)."""

    def __init__(self, name="mrr", dtype=None):
        super().__init__(reciprocal_rank, name=name, dtype=dtype)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


def recall_at_k(k=5, name=None):
    """Recall@k for one target item per example: the target is among the top `k` scores.

    That is Keras' `SparseTopKCategoricalAccuracy`, named `recall@k`.
    """
    return keras.metrics.SparseTopKCategoricalAccuracy(k=k, name=name or f"recall@{k}")


def accuracy_at_1(name="acc@1"):
    """Acc@1: the target item has the top score."""
    return keras.metrics.SparseTopKCategoricalAccuracy(k=1, name=name)
