"""Meta Networks, embedding-based variant: class weights generated from support embeddings.

Each support embedding `h_i` generates a weight vector `w_i = U h_i + e`;
the weights of class `c` are the mean `W_c` of its examples' `w_i`, and a
query's logits are `(V h)^T W_c`. `U`, `V` (hidden x embedding) and `e` are
learned with the backbone; training clips the global gradient norm (1.0 by
default). See `MetaNetwork` for the original, gradient-based Meta Networks
and docs/meta_networks.md for the two side by side.

Example:

>>> import keras, keras_meta
>>> learner = keras_meta.learners.EmbeddingMetaNetwork(keras_meta.models.conv4(), hidden_units=128)
>>> learner.compile(optimizer="adam",
...                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
>>> learner.fit(sampler.dataset(batch_size=1), steps_per_epoch=100)  # doctest: +SKIP
>>> classifier = learner.adapt(support_x, support_y)  # a plain Keras model  # doctest: +SKIP
"""

import keras
import numpy as np
import tensorflow as tf

from keras_meta.learners.base import check_support_set
from keras_meta.learners.embedding_based import EmbeddingMetaLearner, mask_absent_classes
from keras_meta.ops.distances import class_prototypes
from keras_meta.ops.functional import clone_model
from keras_meta.ops.xla import episode_num_classes


@keras.saving.register_keras_serializable(package="keras_meta")
class EmbeddingMetaNetwork(EmbeddingMetaLearner):
    """Meta Network whose fast weights are generated from support embeddings.

    Args:
        backbone: a built Keras model mapping inputs to embeddings `[batch, D]`.
        hidden_units: the size `H` of the generated weights (`U`, `V`: `H x D`).
        gradient_clipnorm: global-norm gradient clipping in `fit` (1.0; None turns it off).

    Output: query logits `[B, N*Q, N]`; classes with no support example get -1e9.
    Under XLA (`compile(jit_compile=True)`) `N` is the support-set size `S`,
    a static bound, and the classes beyond the episode's get -1e9 too (same
    loss and predictions).
    """

    def __init__(self, backbone, hidden_units=128, gradient_clipnorm=1.0, **kwargs):
        super().__init__(backbone, gradient_clipnorm=gradient_clipnorm, **kwargs)
        self.hidden_units = int(hidden_units)
        self.weight_generator = keras.layers.Dense(self.hidden_units, name="weight_generator")  # U h + e
        self.query_projection = keras.layers.Dense(self.hidden_units, use_bias=False, name="query_projection")  # V
        self.weight_generator.build((None, self.embedding_size))
        self.query_projection.build((None, self.embedding_size))
        self.built = True

    def call(self, inputs, training=False):
        support_emb, support_y, query_emb = self.embedded_episode(inputs, training=training)
        num_classes = episode_num_classes(support_y)
        class_weights, counts = class_prototypes(self.weight_generator(support_emb), support_y, num_classes)
        logits = tf.matmul(self.query_projection(query_emb), class_weights, transpose_b=True)
        return mask_absent_classes(logits, counts)

    def adapt(self, support_x, support_y):
        """A plain Keras classifier: the backbone, `V` and a `Dense` layer of the class weights `W_c`."""
        support_x, support_y, num_classes = check_support_set(support_x, support_y)
        embeddings = self.backbone.predict(support_x, verbose=0)
        class_weights, _ = class_prototypes(self.weight_generator(embeddings), support_y, num_classes)
        inputs = keras.Input(shape=support_x.shape[1:])
        projection = keras.layers.Dense(self.hidden_units, use_bias=False, name="query_projection")
        head = keras.layers.Dense(num_classes, use_bias=False, name="class_weights")
        outputs = head(projection(clone_model(self.backbone)(inputs)))
        projection.set_weights(self.query_projection.get_weights())
        head.set_weights([np.asarray(class_weights).T])
        return keras.Model(inputs, outputs, name="meta_network_classifier")

    def get_config(self):
        config = super().get_config()
        config.update(hidden_units=self.hidden_units)
        return config
