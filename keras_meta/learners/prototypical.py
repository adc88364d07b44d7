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

from keras_meta.learners.base import check_support_set, positive_number
from keras_meta.learners.embedding_based import EmbeddingMetaLearner, mask_absent_classes
from keras_meta.ops import distances
from keras_meta.ops.functional import clone_model
from keras_meta.ops.xla import episode_num_classes


@keras.saving.register_keras_serializable(package="keras_meta")
class PrototypicalNetwork(EmbeddingMetaLearner):
    """Few-shot classifier by distance to class prototypes.

    Args:
        backbone: a built Keras model mapping inputs to embeddings `[batch, D]`.
        distance: `"euclidean"` (squared, as in the paper) or `"cosine"`.
        cosine_scale: multiplies cosine similarities into logits.
        gradient_clipnorm: optional global-norm gradient clipping in `fit`.

    Input: an episode dict; output: query logits `[B, N*Q, N]` with `N` the
    number of classes in the support labels. Classes with no support example
    (padding of variable-way episodes) get a logit of -1e9. Under XLA
    (`compile(jit_compile=True)`) `N` is the support-set size `S`, a static
    bound, and the classes beyond the episode's are -1e9 too: same loss and
    predictions, one compiled program for all episodes.
    """

    def __init__(self, backbone, distance="euclidean", cosine_scale=10.0, **kwargs):
        super().__init__(backbone, **kwargs)
        if distance not in distances.DISTANCES:
            raise ValueError(f"`distance` must be one of {distances.DISTANCES}, got {distance!r}.")
        self.distance = distance
        self.cosine_scale = positive_number("cosine_scale", cosine_scale,
                                            "it multiplies the cosine similarities into logits")
        self.built = True  # all weights are the backbone's, built already

    def call(self, inputs, training=False):
        support_emb, support_y, query_emb = self.embedded_episode(inputs, training=training)
        num_classes = episode_num_classes(support_y)
        prototypes, counts = distances.class_prototypes(support_emb, support_y, num_classes)
        logits = distances.prototype_logits(query_emb, prototypes, self.distance, self.cosine_scale)
        return mask_absent_classes(logits, counts)

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
        backbone = clone_model(self.backbone)
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
        config.update(distance=self.distance, cosine_scale=self.cosine_scale)
        return config
