"""How hard a few-shot episode is: the hardness metric of Dhillon et al. (2020).

`hardness = mean over queries of log((1 - p(y|x)) / p(y|x))`, where
`p(.|x)` is the softmax over cosine similarities between the query's
embedding and the class means of the support embeddings. Higher is harder;
it compares episodes of different ways and shots on one scale, so it can
rank episodes or order them for a curriculum.

Example:

>>> import keras, numpy as np
>>> from keras_meta import ops
>>> episode = ({"support_x": np.eye(2, dtype="float32")[None], "support_y": np.array([[0, 1]]),
...             "query_x": np.array([[[1.0, 0.0]]], "float32")}, np.array([[0]]))
>>> hardness = ops.hardness_metric(episode, embedding_fn=lambda x: x)
>>> hardness.shape, bool(hardness[0] < 0)
(TensorShape([1]), True)
"""

import keras
import tensorflow as tf

from keras_meta.data.episode_format import MASKED_LOGIT, QUERY_X, SUPPORT_X, SUPPORT_Y
from keras_meta.ops.distances import class_prototypes, pairwise_cosine_similarity


def _embedding_function(embedding_fn):
    """A callable images -> embeddings: the function itself, or the `backbone` of an object that has one."""
    backbone = getattr(embedding_fn, "backbone", None)
    if backbone is not None:
        return backbone
    if isinstance(embedding_fn, keras.Model) and hasattr(embedding_fn, "adapt"):  # a learner without a backbone
        raise ValueError(
            f"A {type(embedding_fn).__name__} has no embedding backbone; pass `embedding_fn`, a model that maps "
            "examples to embeddings (e.g. the wrapped model without its head)."
        )
    if not callable(embedding_fn):
        raise ValueError(
            "`embedding_fn` must map a batch of examples to embeddings [n, D] (a Keras model, a function, "
            f"or a learner with a `backbone`), got {type(embedding_fn).__name__}."
        )
    return embedding_fn


def hardness_metric(episode, embedding_fn, scale=1.0):
    """Hardness of each task of an episode batch: `[B]`.

    Args:
        episode: `(inputs, query_labels)` as the episode samplers yield it,
            `inputs = {"support_x": [B, S, ...], "support_y": [B, S], "query_x": [B, Q, ...]}`.
        embedding_fn: a Keras model or function mapping examples `[n, ...]`
            to embeddings `[n, D]`, or a learner, whose own `backbone` is used.
        scale: multiplies the cosine similarities before the softmax (1.0 in the paper).

    Padding (label -1) in the support or query set is ignored.
    """
    if not (isinstance(episode, (tuple, list)) and len(episode) == 2 and isinstance(episode[0], dict)):
        raise ValueError("`episode` must be `(inputs, query_labels)`, one element of an episode dataset.")
    inputs, query_labels = episode
    missing = {SUPPORT_X, SUPPORT_Y, QUERY_X} - set(inputs)
    if missing:
        raise ValueError(f"The episode inputs lack {sorted(missing)}.")
    embed = _embedding_function(embedding_fn)
    support_x, query_x = tf.convert_to_tensor(inputs[SUPPORT_X]), tf.convert_to_tensor(inputs[QUERY_X])
    support_y = tf.cast(inputs[SUPPORT_Y], tf.int32)
    query_labels = tf.cast(query_labels, tf.int32)
    if support_y.shape.rank != 2 or query_labels.shape.rank != 2:
        raise ValueError(
            f"Expected a batch of tasks: support_y [B, S] and query labels [B, Q], got {support_y.shape} "
            f"and {query_labels.shape}; add a leading task axis for a single task."
        )
    tasks, num_support = tf.shape(support_x)[0], tf.shape(support_x)[1]
    features = tf.concat([tf.reshape(support_x, [-1, *support_x.shape[2:]]),
                          tf.reshape(query_x, [-1, *query_x.shape[2:]])], 0)
    embeddings = tf.convert_to_tensor(embed(features))
    embeddings = tf.cast(tf.reshape(embeddings, [tf.shape(embeddings)[0], -1]), tf.float32)
    support = tf.reshape(embeddings[: tasks * num_support], [tasks, num_support, -1])
    query = tf.reshape(embeddings[tasks * num_support:], [tasks, tf.shape(query_x)[1], -1])
    num_classes = tf.reduce_max(support_y) + 1
    means, counts = class_prototypes(support, support_y, num_classes)
    logits = scale * pairwise_cosine_similarity(query, means)
    logits = tf.where((counts > 0)[:, None, :], logits, MASKED_LOGIT)
    p_true = tf.gather(tf.nn.softmax(logits), tf.maximum(query_labels, 0), axis=-1, batch_dims=2)
    p_true = tf.clip_by_value(p_true, 1e-7, 1.0 - 1e-7)
    per_query = tf.math.log((1.0 - p_true) / p_true)
    weight = tf.cast(query_labels >= 0, per_query.dtype)
    return tf.reduce_sum(per_query * weight, -1) / tf.maximum(tf.reduce_sum(weight, -1), 1.0)
