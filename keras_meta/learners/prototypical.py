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
import tensorflow as tf

from keras_meta.learners.base import MetaLearner, check_support_set, unpack_episode
from keras_meta.models.heads import PrototypeHead, check_distance, prototype_logits
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
        self.backbone = backbone
        self.distance = check_distance(distance)
        self.cosine_scale = float(cosine_scale)

    def embed_episode(self, support_x, query_x, training=False):
        """Embeds support and query together: `([B, S, D], [B, Q, D])`."""
        feature_shape = support_x.shape[2:]
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
        support_emb, query_emb = self.embed_episode(support_x, query_x, training=training)
        num_classes = tf.reduce_max(support_y) + 1
        prototypes, counts = distances.class_prototypes(support_emb, support_y, num_classes)
        logits = prototype_logits(query_emb, prototypes, self.distance, self.cosine_scale)
        present = (counts > 0)[:, None, :]
        return tf.where(present, logits, tf.constant(MASKED_LOGIT, logits.dtype))

    def adapt(self, support_x, support_y):
        """A plain Keras classifier for one task: inputs `[batch, ...]` -> `N` logits.

        The prototypes of `support_x` (one task, labels `0..N-1`) are baked into
        a `PrototypeHead` after a copy of the backbone.
        """
        support_x, support_y, num_classes = check_support_set(support_x, support_y)
        embeddings = self.backbone.predict(support_x, verbose=0)
        prototypes, _ = distances.class_prototypes(embeddings, support_y, num_classes)
        backbone = keras.models.clone_model(self.backbone)
        backbone.set_weights(self.backbone.get_weights())
        inputs = keras.Input(shape=support_x.shape[1:])
        head = PrototypeHead(prototypes.numpy(), self.distance, self.cosine_scale, name="prototypes")
        return keras.Model(inputs, head(backbone(inputs)), name="prototype_classifier")

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
