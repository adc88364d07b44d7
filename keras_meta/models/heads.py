"""`PrototypeHead`: classify embeddings by their distance to fixed class prototypes.

Example:

>>> import numpy as np
>>> head = PrototypeHead(np.eye(3, dtype="float32"))
>>> head(np.array([[0.9, 0.1, 0.0]], "float32")).numpy().argmax()
0
"""

import keras
import numpy as np
import tensorflow as tf

from keras_meta.ops import distances

DISTANCES = ("euclidean", "cosine")


def check_distance(distance):
    if distance not in DISTANCES:
        raise ValueError(f"`distance` must be one of {DISTANCES}, got {distance!r}.")
    return distance


def prototype_logits(embeddings, prototypes, distance, cosine_scale):
    """Logits `[..., M, N]`: negative squared distance, or scaled cosine similarity."""
    if distance == "euclidean":
        return -distances.pairwise_squared_euclidean(embeddings, prototypes)
    return cosine_scale * distances.pairwise_cosine_similarity(embeddings, prototypes)


@keras.saving.register_keras_serializable(package="keras_meta")
class PrototypeHead(keras.layers.Layer):
    """Maps embeddings `[batch, D]` to logits `[batch, N]` against `N` stored prototypes."""

    def __init__(self, prototypes, distance="euclidean", cosine_scale=10.0, **kwargs):
        super().__init__(**kwargs)
        prototypes = np.asarray(prototypes, dtype="float32")
        if prototypes.ndim != 2:
            raise ValueError(f"`prototypes` must be [num_classes, dim], got shape {prototypes.shape}.")
        self.distance = check_distance(distance)
        self.cosine_scale = float(cosine_scale)
        self.prototypes = self.add_weight(
            shape=prototypes.shape, initializer=keras.initializers.Constant(prototypes),
            trainable=False, name="prototypes",
        )

    def call(self, embeddings):
        return prototype_logits(embeddings, tf.convert_to_tensor(self.prototypes), self.distance, self.cosine_scale)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.prototypes.shape[0])

    def get_config(self):
        config = super().get_config()
        config.update(
            prototypes=keras.ops.convert_to_numpy(self.prototypes).tolist(),
            distance=self.distance,
            cosine_scale=self.cosine_scale,
        )
        return config
