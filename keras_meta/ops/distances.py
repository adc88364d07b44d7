"""Distances, similarities and class prototypes over embeddings.

All functions take any leading batch axes: `x [..., M, D]`, `y [..., P, D]`.

Example:

>>> import numpy as np
>>> from keras_meta import ops
>>> emb = np.eye(3, dtype="float32")
>>> ops.pairwise_squared_euclidean(emb, emb).numpy()[0]
array([0., 2., 2.], dtype=float32)
"""

import tensorflow as tf


def pairwise_squared_euclidean(x, y):
    """`||x_m - y_p||^2` for every pair: `[..., M, P]`."""
    x, y = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
    x_sq = tf.reduce_sum(tf.square(x), axis=-1)[..., :, None]
    y_sq = tf.reduce_sum(tf.square(y), axis=-1)[..., None, :]
    return tf.maximum(x_sq + y_sq - 2.0 * tf.matmul(x, y, transpose_b=True), 0.0)


def pairwise_cosine_similarity(x, y=None, epsilon=1e-8):
    """Cosine similarity of every pair: `[..., M, P]` (`y=None` compares `x` with itself)."""
    x = tf.convert_to_tensor(x)
    y = x if y is None else tf.convert_to_tensor(y)
    x_unit = x * tf.math.rsqrt(tf.maximum(tf.reduce_sum(tf.square(x), -1, keepdims=True), epsilon))
    y_unit = y * tf.math.rsqrt(tf.maximum(tf.reduce_sum(tf.square(y), -1, keepdims=True), epsilon))
    return tf.matmul(x_unit, y_unit, transpose_b=True)


DISTANCES = ("euclidean", "cosine")


def prototype_logits(embeddings, prototypes, distance="euclidean", cosine_scale=10.0):
    """Logits `[..., M, N]` of embeddings against prototypes.

    `"euclidean"`: negative squared distance; `"cosine"`: `cosine_scale` times
    the cosine similarity.
    """
    if distance == "euclidean":
        return -pairwise_squared_euclidean(embeddings, prototypes)
    if distance == "cosine":
        return cosine_scale * pairwise_cosine_similarity(embeddings, prototypes)
    raise ValueError(f"`distance` must be one of {DISTANCES}, got {distance!r}.")


def class_prototypes(embeddings, labels, num_classes):
    """Mean embedding of each class: `([..., N, D] prototypes, [..., N] counts)`.

    Labels outside `0..num_classes-1` (such as the padding label -1) are
    ignored; a class with no example gets a zero prototype and count 0.
    """
    embeddings = tf.convert_to_tensor(embeddings)
    one_hot = tf.one_hot(labels, num_classes, dtype=embeddings.dtype)
    counts = tf.reduce_sum(one_hot, axis=-2)
    sums = tf.matmul(one_hot, embeddings, transpose_a=True)
    return sums / tf.maximum(counts, 1.0)[..., None], counts
