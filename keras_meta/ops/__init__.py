"""Few-shot math: distances, prototypes, matching attention, ridge regression, episode hardness,
functional use of Keras models, batch normalisation for meta-gradients, and gradient checkpointing."""

from keras_meta.ops.batch_norm import exact_batch_norm_moments, fused_batch_norm
from keras_meta.ops.distances import (
    class_prototypes,
    pairwise_cosine_similarity,
    pairwise_squared_euclidean,
    prototype_logits,
)
from keras_meta.ops.functional import (
    clone_model,
    clone_weights,
    detach_weights,
    functional_call,
    magic_box,
    update_weights,
)
from keras_meta.ops.hardness import hardness_metric
from keras_meta.ops.matching import matching_log_probas, matching_loss
from keras_meta.ops.recompute import recompute_gradient
from keras_meta.ops.ridge import ridge_regression

__all__ = [
    "class_prototypes",
    "clone_model",
    "clone_weights",
    "detach_weights",
    "exact_batch_norm_moments",
    "functional_call",
    "fused_batch_norm",
    "hardness_metric",
    "magic_box",
    "matching_log_probas",
    "matching_loss",
    "pairwise_cosine_similarity",
    "pairwise_squared_euclidean",
    "prototype_logits",
    "recompute_gradient",
    "ridge_regression",
    "update_weights",
]
