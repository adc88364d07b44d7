"""Prototypical Networks (Snell et al. 2017).

Each class is represented by the mean embedding (prototype) of its support
examples; a query's logits are its negative squared Euclidean distances to
the prototypes (or scaled cosine similarities).

Example:

>>> import keras, keras_meta
>>> learner = keras_meta.learners.PrototypicalNetwork(keras_meta.models.conv4())
>>> learner.compile(optimizer="adam",
...                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
...                 metrics=["sparse_categorical_accuracy"])
>>> learner.fit(sampler.dataset(batch_size=1), steps_per_epoch=100)  # doctest: +SKIP
>>> classifier = learner.adapt(support_x, support_y)  # a plain Keras model  # doctest: +SKIP
"""

import keras
import numpy as np
import tensorflow as tf

from keras_meta.learners.base import MetaLearner, check_support_set, class_labels, unpack_episode
from keras_meta.ops import distances

MASKED_LOGIT = -1e9


@keras.saving.register_keras_serializable(package="keras_meta")
class PrototypicalNetwork(MetaLearner):
    """Few-shot classifier by distance to class prototypes.

    Args:
        backbone: a built Keras model mapping inputs to embeddings `[batch, D]`.
        distance: `"euclidean"` (squared, as in the paper) or `"cosine"`.
        cosine_scale: multiplies cosine similarities into logits.

    Input: an episode dict; output: query logits `[B, N*Q, N]` with `N` the
    number of classes in the support labels. Classes with no support example
    (padding of variable-way episodes) get a logit of -1e9.
    """

    def __init__(self, backbone, distance="euclidean", cosine_scale=10.0, **kwargs):
        super().__init__(**kwargs)
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
        if distance not in distances.DISTANCES:
            raise ValueError(f"`distance` must be one of {distances.DISTANCES}, got {distance!r}.")
        self.backbone = backbone
        self.distance = distance
        self.cosine_scale = float(cosine_scale)
        self.built = True  # all weights are the backbone's, built already

    def embed_episode(self, support_x, query_x, training=False):
        """Embeds support and query together: `([B, S, D], [B, Q, D])`."""
        feature_shape = support_x.shape[2:]
        if query_x.shape[2:] != feature_shape:
            raise ValueError(f"`support_x` {support_x.shape} and `query_x` {query_x.shape} differ in example shape.")
        tasks, num_support = tf.shape(support_x)[0], tf.shape(support_x)[1]
        flat = tf.concat(
            [tf.reshape(support_x, [-1, *feature_shape]), tf.reshape(query_x, [-1, *feature_shape])], axis=0
        )
        embeddings = self.backbone(flat, training=training)
        split = tasks * num_support
        support = tf.reshape(embeddings[:split], [tasks, num_support, embeddings.shape[-1]])
        query = tf.reshape(embeddings[split:], [tasks, -1, embeddings.shape[-1]])
        return support, query

    def call(self, inputs, training=False):
        support_x, support_y, query_x = unpack_episode(inputs)
        support_y = class_labels(support_y)
        support_emb, query_emb = self.embed_episode(support_x, query_x, training=training)
        num_classes = tf.reduce_max(support_y) + 1
        prototypes, counts = distances.class_prototypes(support_emb, support_y, num_classes)
        logits = distances.prototype_logits(query_emb, prototypes, self.distance, self.cosine_scale)
        present = (counts > 0)[:, None, :]
        return tf.where(present, logits, tf.constant(MASKED_LOGIT, logits.dtype))

    def adapt(self, support_x, support_y):
        """A plain Keras classifier for one task: inputs `[batch, ...]` -> `N` logits.

        The prototypes of `support_x` (one task, labels `0..N-1`) are baked into
        standard Keras layers after a copy of the backbone, so the classifier
        loads without keras-meta. Euclidean: a `Dense` layer computing
        `2 q.p - |p|^2`, the learner's logits up to a per-example constant
        (same probabilities and predictions); cosine: `UnitNormalization` and a
        `Dense` layer of scaled unit prototypes, the learner's logits.
        """
        support_x, support_y, num_classes = check_support_set(support_x, support_y)
        embeddings = self.backbone.predict(support_x, verbose=0)
        prototypes, _ = distances.class_prototypes(embeddings, support_y, num_classes)
        prototypes = prototypes.numpy()
        backbone = keras.models.clone_model(self.backbone)
        backbone.set_weights(self.backbone.get_weights())
        inputs = keras.Input(shape=support_x.shape[1:])
        outputs = backbone(inputs)
        if self.distance == "euclidean":
            head = keras.layers.Dense(num_classes, name="prototypes")
            weights = [2.0 * prototypes.T, -np.sum(prototypes**2, axis=1)]
        else:
            outputs = keras.layers.UnitNormalization(name="unit_embedding")(outputs)
            head = keras.layers.Dense(num_classes, use_bias=False, name="prototypes")
            unit = prototypes / np.maximum(np.linalg.norm(prototypes, axis=1, keepdims=True), 1e-4)
            weights = [self.cosine_scale * unit.T]
        outputs = head(outputs)
        head.set_weights(weights)
        return keras.Model(inputs, outputs, name="prototype_classifier")

    def get_config(self):
        config = super().get_config()
        config.update(
            backbone=keras.saving.serialize_keras_object(self.backbone),
            distance=self.distance,
            cosine_scale=self.cosine_scale,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)
