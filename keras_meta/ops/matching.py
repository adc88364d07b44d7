"""Matching-network attention: class log-probabilities of queries from a labelled support set.

A query attends to every support example with weights
`softmax_i(scale * cos(query, support_i))`; the probability of class `c` is
the attention mass on the support examples of `c` (Vinyals et al. 2016).

Example:

>>> import numpy as np
>>> from keras_meta import ops
>>> support = np.array([[1.0, 0.0], [0.0, 1.0]], "float32")
>>> log_p = ops.matching_log_probas(np.array([[1.0, 0.1]], "float32"), support, np.array([0, 1]), num_classes=2)
>>> int(np.argmax(log_p))
0
"""

import tensorflow as tf

from keras_meta.data.episode_format import MASKED_LOGIT
from keras_meta.ops.distances import pairwise_cosine_similarity


def matching_log_probas(query_embeddings, support_embeddings, support_labels, num_classes, scale=1.0):
    """Log-probabilities `[..., Q, N]` of each query belonging to each class.

    `log p(c | q) = logsumexp_{i: y_i = c} s_qi - logsumexp_i s_qi` with
    `s_qi = scale * cos(q, support_i)`, computed stably. Support examples
    labelled -1 (padding) are ignored; a class with no support example gets
    `MASKED_LOGIT` (-1e9).
    """
    similarity = scale * pairwise_cosine_similarity(query_embeddings, support_embeddings)  # [..., Q, S]
    support_labels = tf.convert_to_tensor(support_labels)
    members = tf.one_hot(support_labels, num_classes, on_value=True, off_value=False, dtype=tf.bool)  # [..., S, N]
    members = tf.broadcast_to(members[..., None, :, :], tf.concat([tf.shape(similarity), [num_classes]], 0))
    per_class = tf.where(members, similarity[..., None], tf.constant(-float("inf"), similarity.dtype))
    class_scores = tf.reduce_logsumexp(per_class, axis=-2)  # [..., Q, N]
    real = tf.broadcast_to((support_labels >= 0)[..., None, :], tf.shape(similarity))
    total = tf.reduce_logsumexp(tf.where(real, similarity, tf.constant(-float("inf"), similarity.dtype)), -1)
    log_p = class_scores - total[..., None]
    return tf.where(tf.math.is_finite(log_p), log_p, tf.constant(MASKED_LOGIT, log_p.dtype))


def matching_loss(query_embeddings, support_embeddings, support_labels, query_labels, num_classes, scale=1.0):
    """Mean negative log-likelihood of the query labels under `matching_log_probas` (label -1 skipped)."""
    log_p = matching_log_probas(query_embeddings, support_embeddings, support_labels, num_classes, scale)
    query_labels = tf.convert_to_tensor(query_labels)
    picked = tf.gather(log_p, tf.maximum(query_labels, 0), axis=-1, batch_dims=query_labels.shape.rank)
    weight = tf.cast(query_labels >= 0, log_p.dtype)
    return -tf.reduce_sum(picked * weight) / tf.maximum(tf.reduce_sum(weight), 1.0)
