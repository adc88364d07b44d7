"""Few-shot math: distances, similarities, prototypes, and functional use of Keras models."""

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

__all__ = [
    "class_prototypes",
    "clone_model",
    "clone_weights",
    "detach_weights",
    "functional_call",
    "magic_box",
    "pairwise_cosine_similarity",
    "pairwise_squared_euclidean",
    "prototype_logits",
    "update_weights",
]
