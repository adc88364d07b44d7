"""`EmbeddingMetaLearner`: the shared part of learners built on an embedding backbone.

Prototypical, Matching, R2D2 and both Meta Network learners embed every
support and query example of an episode with one backbone, then classify the
queries from the support embeddings in closed form or with a small learned
head. This base checks the backbone, embeds episodes in one batch, can clip
the global gradient norm in `fit`, and saves the backbone with the learner.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_meta.data.episode_format import MASKED_LOGIT
from keras_meta.learners.base import MetaLearner, class_labels, replicas, unpack_episode
from keras_meta.ops.batch_norm import fused_batch_norm


def check_backbone(backbone):
    if not isinstance(backbone, keras.Model) or not backbone.built:
        raise ValueError(
            "`backbone` must be a built keras.Model (give it an Input shape), "
            f"got {type(backbone).__name__}."
        )
    if len(backbone.output_shape) != 2:
        raise ValueError(
            f"`backbone` must output embeddings [batch, D], but its output shape is {backbone.output_shape}; "
            "end it with a Flatten or pooling layer."
        )


def cosine_similarity(inputs, keys, scale, names=("unit_embedding", "support_similarity")):
    """`scale * cos(inputs, keys_i)` from standard Keras layers, with `keys [K, D]` baked in.

    `UnitNormalization` -> `Dense` (kernel: the scaled unit keys); used by the
    `adapt()` classifiers of attention-based learners.
    """
    unit_name, dense_name = names
    similarity = keras.layers.Dense(len(keys), use_bias=False, name=dense_name)
    outputs = similarity(keras.layers.UnitNormalization(name=unit_name)(inputs))
    unit_keys = keys / np.maximum(np.linalg.norm(keys, axis=1, keepdims=True), 1e-4)
    similarity.set_weights([scale * unit_keys.T])
    return outputs


def cosine_attention(inputs, keys, scale, names=("unit_embedding", "support_similarity", "attention")):
    """`softmax(scale * cos(inputs, keys_i))`: `cosine_similarity`, then a `Softmax` layer."""
    return keras.layers.Softmax(name=names[2])(cosine_similarity(inputs, keys, scale, names[:2]))


def mask_absent_classes(logits, counts):
    """Logits of classes without support examples (variable-way padding) set to -1e9."""
    return tf.where((counts > 0)[:, None, :], logits, tf.constant(MASKED_LOGIT, logits.dtype))


class EmbeddingMetaLearner(MetaLearner):
    """Base of backbone-based learners.

    Args:
        backbone: a built Keras model mapping inputs to embeddings `[batch, D]`.
        gradient_clipnorm: if set, `fit` clips the global norm of each
            step's gradients to this value before the optimizer applies them.
    """

    def __init__(self, backbone, gradient_clipnorm=None, **kwargs):
        super().__init__(**kwargs)
        check_backbone(backbone)
        if gradient_clipnorm is not None and not gradient_clipnorm > 0:
            raise ValueError(f"`gradient_clipnorm` must be positive or None, got {gradient_clipnorm}.")
        self.backbone = backbone
        self.gradient_clipnorm = None if gradient_clipnorm is None else float(gradient_clipnorm)

    @property
    def embedding_size(self):
        return self.backbone.output_shape[-1]

    def embed_episode(self, support_x, query_x, training=False):
        """Embeds support and query together: `([B, S, D], [B, Q, D])`."""
        feature_shape = support_x.shape[2:]
        if query_x.shape[2:] != feature_shape:
            raise ValueError(f"`support_x` {support_x.shape} and `query_x` {query_x.shape} differ in example shape.")
        tasks, num_support = tf.shape(support_x)[0], tf.shape(support_x)[1]
        flat = tf.concat(
            [tf.reshape(support_x, [-1, *feature_shape]), tf.reshape(query_x, [-1, *feature_shape])], axis=0
        )
        # Training-mode batch normalisation as one fused op; across replicas, the global batch's statistics.
        with fused_batch_norm(across_replicas=True):
            embeddings = self.backbone(flat, training=training)
        split = tasks * num_support
        support = tf.reshape(embeddings[:split], [tasks, num_support, embeddings.shape[-1]])
        query = tf.reshape(embeddings[split:], [tasks, -1, embeddings.shape[-1]])
        return support, query

    def embedded_episode(self, inputs, training=False):
        """`(support embeddings, int32 support labels, query embeddings)` of an episode dict."""
        support_x, support_y, query_x = unpack_episode(inputs)
        support_emb, query_emb = self.embed_episode(support_x, query_x, training=training)
        return support_emb, class_labels(support_y), query_emb

    def compute_update(self, x, y, sample_weight):
        """Loss, predictions and gradients of one batch (clipped to `gradient_clipnorm` when set)."""
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
            scaled_loss = self.optimizer.scale_loss(loss)  # mixed precision: a LossScaleOptimizer's scale
        variables = self.trainable_variables
        gradients = tape.gradient(scaled_loss, variables)
        if self.gradient_clipnorm is None:
            return loss, y_pred, gradients
        scale = tf.cast(self.optimizer.scale_loss(tf.ones([], loss.dtype)), tf.float32)
        context = tf.distribute.get_replica_context()
        if context is not None and replicas() > 1:  # clip the global gradient (the replicas' sum), not each part
            gradients = [tf.zeros_like(v) if g is None else g for g, v in zip(gradients, variables, strict=True)]
            gradients = context.all_reduce(tf.distribute.ReduceOp.SUM, gradients)
        gradients, _ = tf.clip_by_global_norm(gradients, self.gradient_clipnorm * scale)  # the unscaled norm
        if replicas() > 1:  # every replica holds the clipped sum; the optimizer sums them again
            gradients = [g / replicas() for g in gradients]
        return loss, y_pred, gradients

    def get_config(self):
        config = super().get_config()
        config.update(backbone=keras.saving.serialize_keras_object(self.backbone),
                      gradient_clipnorm=self.gradient_clipnorm)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)
