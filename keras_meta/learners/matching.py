"""Matching Networks (Vinyals et al. 2016).

A query attends over the support set with softmax-normalised cosine
similarities of their embeddings; the attention mass on each class is the
query's probability of that class. With `full_context_embeddings=True` the
support embeddings are re-encoded by a bidirectional LSTM over the whole
support set, and each query embedding by an attention LSTM that reads the
support set for `processing_steps` steps (the paper's FCE).

Example:

>>> import keras, keras_meta
>>> learner = keras_meta.learners.MatchingNetwork(keras_meta.models.conv4(), full_context_embeddings=True)
>>> learner.compile(optimizer="adam",
...                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
...                 metrics=["sparse_categorical_accuracy"])
>>> learner.fit(sampler.dataset(batch_size=1), steps_per_epoch=100)  # doctest: +SKIP
>>> classifier = learner.adapt(support_x, support_y)  # images -> class logits  # doctest: +SKIP
"""

import keras
import numpy as np
import tensorflow as tf

from keras_meta.data.episode_format import MASKED_LOGIT
from keras_meta.learners.base import check_support_set, positive_number
from keras_meta.learners.embedding_based import EmbeddingMetaLearner, cosine_similarity
from keras_meta.models.layers import SupportClassLogits
from keras_meta.ops.functional import clone_model
from keras_meta.ops.matching import matching_log_probas
from keras_meta.ops.xla import episode_num_classes


@keras.saving.register_keras_serializable(package="keras_meta")
class AttentionLSTMEmbedding(keras.layers.Layer):
    """The query side of full context embeddings: `f(x, S)` of Vinyals et al.

    For `processing_steps` steps an LSTM cell, fed the query embedding `x`,
    updates its state `h_k = LSTM(x, [h_{k-1} + r_{k-1}, c_{k-1}]) + x`, where
    `r_k` is the attention read-out `sum_i softmax(h_k . g_i) g_i` of the
    support context `g` (Vinyals et al.'s read-out). Call it with `(queries [B, Q, D], context [B, S, D],
    context_mask [B, S])`, or, when built with a fixed `context [S, D]` (an
    adapted classifier), with queries `[batch, D]` alone.
    """

    def __init__(self, units, processing_steps=5, context=None, context_size=None, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.processing_steps = int(processing_steps)
        if self.processing_steps < 1:
            raise ValueError(f"`processing_steps` must be at least 1, got {processing_steps}.")
        self.cell = keras.layers.LSTMCell(self.units, name="attention_lstm_cell")
        if context is not None:
            context_size = np.shape(context)[0]
        self.context_size = None if context_size is None else int(context_size)
        self._initial_context = context

    def build(self, input_shape=None):
        self.cell.build((None, self.units))
        if self.context_size is not None:
            self.context = self.add_weight(shape=(self.context_size, self.units), trainable=False, name="context",
                                           initializer="zeros")
            if self._initial_context is not None:
                self.context.assign(np.asarray(self._initial_context, self.context.dtype))

    def call(self, queries, context=None, context_mask=None):
        fixed = context is None
        if fixed:
            if self.context_size is None:
                raise ValueError("This layer has no fixed context: call it with `(queries, context)`.")
            queries, context = queries[None], tf.convert_to_tensor(self.context)[None]
        if context_mask is None:
            context_mask = tf.ones(tf.shape(context)[:2], tf.bool)
        shape = tf.shape(queries)
        flat_queries = tf.reshape(queries, [-1, self.units])
        hidden, cell_state = tf.zeros_like(flat_queries), tf.zeros_like(flat_queries)
        read = tf.zeros_like(flat_queries)
        for _ in range(self.processing_steps):
            _, (new_hidden, cell_state) = self.cell(flat_queries, [hidden + read, cell_state])
            hidden = new_hidden + flat_queries
            scores = tf.einsum("bqd,bsd->bqs", tf.reshape(hidden, shape), context)
            scores = tf.where(context_mask[:, None, :], scores, tf.constant(MASKED_LOGIT, scores.dtype))
            read = tf.reshape(tf.einsum("bqs,bsd->bqd", tf.nn.softmax(scores), context), [-1, self.units])
        output = tf.reshape(hidden, shape)
        return output[0] if fixed else output

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units, processing_steps=self.processing_steps)
        config["context_size"] = self.context_size  # the values are a weight
        return config


@keras.saving.register_keras_serializable(package="keras_meta")
class MatchingNetwork(EmbeddingMetaLearner):
    """Few-shot classifier by attention over the support set.

    Args:
        backbone: a built Keras model mapping inputs to embeddings `[batch, D]`.
        full_context_embeddings: re-encode the support set with a
            bidirectional LSTM and the queries with an attention LSTM (FCE).
        processing_steps: steps of the query attention LSTM (FCE only).
        cosine_scale: multiplies the cosine similarities before the
            attention softmax. The paper uses 1.0; on Omniglot 100 scored
            about 10 points higher than 10 (95.93% vs 86.25% 5-way 1-shot,
            docs/metric_learners.md).
        gradient_clipnorm: optional global-norm gradient clipping in `fit`.

    Output: query log-probabilities `[B, N*Q, N]`, logits for
    `SparseCategoricalCrossentropy(from_logits=True)`; classes with no support
    example get -1e9. Under XLA (`compile(jit_compile=True)`) `N` is the
    support-set size `S`, a static bound, and the classes beyond the
    episode's get -1e9 too (same loss and predictions).
    """

    def __init__(self, backbone, full_context_embeddings=False, processing_steps=5, cosine_scale=100.0, **kwargs):
        super().__init__(backbone, **kwargs)
        self.full_context_embeddings = bool(full_context_embeddings)
        self.processing_steps = int(processing_steps)
        self.cosine_scale = positive_number("cosine_scale", cosine_scale,
                                            "it multiplies the cosine similarities before the attention softmax")
        units = self.embedding_size
        if self.full_context_embeddings:
            self.support_encoder = keras.layers.Bidirectional(
                keras.layers.LSTM(units, return_sequences=True), merge_mode="sum", name="support_context_lstm")
            self.support_encoder.build((None, None, units))
            self.query_encoder = AttentionLSTMEmbedding(units, self.processing_steps, name="query_attention_lstm")
            self.query_encoder.build()
        self.built = True

    def context_embeddings(self, support_emb, support_y, query_emb, training=False):
        """`(g(support), f(query))`: the full context embeddings, or the plain ones without FCE."""
        if not self.full_context_embeddings:
            return support_emb, query_emb
        present = support_y >= 0
        context = support_emb + self.support_encoder(support_emb, mask=present, training=training)
        return context, self.query_encoder(query_emb, context, present)

    def call(self, inputs, training=False):
        support_emb, support_y, query_emb = self.embedded_episode(inputs, training=training)
        support_emb, query_emb = self.context_embeddings(support_emb, support_y, query_emb, training)
        num_classes = episode_num_classes(support_y)
        return matching_log_probas(query_emb, support_emb, support_y, num_classes, self.cosine_scale)

    def adapt(self, support_x, support_y):
        """A Keras classifier for one task: inputs `[batch, ...]` -> `N` class logits.

        The logits are the learner's own outputs, the class log-probabilities
        (`softmax` of them gives the attention mass on each class), as every
        adapted classifier returns logits. The support embeddings (after FCE,
        if used) are baked in: `UnitNormalization` + `Dense` give the scaled
        cosine similarities, `keras_meta.models.SupportClassLogits` the class
        log-probabilities; with FCE the query attention LSTM is a keras-meta
        layer too. Loading the classifier needs `import keras_meta`.
        """
        support_x, support_y, num_classes = check_support_set(support_x, support_y)
        embeddings = self.backbone.predict(support_x, verbose=0)[None]
        labels = tf.constant(support_y[None], tf.int32)
        if self.full_context_embeddings:
            embeddings, _ = self.context_embeddings(tf.constant(embeddings), labels, tf.constant(embeddings))
        context = np.asarray(embeddings)[0]
        inputs = keras.Input(shape=support_x.shape[1:])
        outputs = clone_model(self.backbone)(inputs)
        if self.full_context_embeddings:
            query_encoder = AttentionLSTMEmbedding(self.embedding_size, self.processing_steps, context=context,
                                                   name="query_attention_lstm")
            outputs = query_encoder(outputs)
            query_encoder.cell.set_weights(self.query_encoder.cell.get_weights())
        outputs = cosine_similarity(outputs, context, self.cosine_scale)
        outputs = SupportClassLogits(support_y, num_classes, name="class_logits")(outputs)
        return keras.Model(inputs, outputs, name="matching_classifier")

    def get_config(self):
        config = super().get_config()
        config.update(full_context_embeddings=self.full_context_embeddings,
                      processing_steps=self.processing_steps, cosine_scale=self.cosine_scale)
        return config
