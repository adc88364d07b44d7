"""Few-shot math: distances, similarities and prototypes."""

from keras_meta.ops.distances import (
    class_prototypes,
    pairwise_cosine_similarity,
    pairwise_squared_euclidean,
    prototype_logits,
)

__all__ = ["class_prototypes", "pairwise_cosine_similarity", "pairwise_squared_euclidean", "prototype_logits"]
