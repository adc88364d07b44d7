"""R2D2: meta-learning with a differentiable closed-form ridge-regression head (Bertinetto et al. 2019).

Per task, the one-hot support labels are regressed on the support embeddings
in closed form, `W = X^T (X X^T + lambda I)^-1 Y` (the Woodbury form, a solve
of the size of the support set, when there are fewer support examples than
features; the normal equations otherwise), and a query's logits are
`scale * (x W) + bias`. The backbone, `lambda`, `scale` and `bias` are
meta-learned through the solve.

Example:

>>> import keras, keras_meta
>>> learner = keras_meta.learners.R2D2(keras_meta.models.conv4())
>>> learner.compile(optimizer="adam",
...                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
...                 metrics=["sparse_categorical_accuracy"])
>>> learner.fit(sampler.dataset(batch_size=1), steps_per_epoch=100)  # doctest: +SKIP
>>> classifier = learner.adapt(support_x, support_y)  # a plain Keras model  # doctest: +SKIP
"""

import math

import keras
import numpy as np
import tensorflow as tf

from keras_meta.learners.base import check_support_set
from keras_meta.learners.embedding_based import EmbeddingMetaLearner, mask_absent_classes
from keras_meta.ops.functional import clone_model
from keras_meta.ops.ridge import ridge_regression
from keras_meta.ops.xla import episode_num_classes


@keras.saving.register_keras_serializable(package="keras_meta")
class R2D2(EmbeddingMetaLearner):
    """Few-shot classifier with a ridge-regression head solved per task.

    Args:
        backbone: a built Keras model mapping inputs to embeddings `[batch, D]`.
        initial_lambda: initial ridge penalty (learned, kept positive as `exp` of a weight).
        initial_scale, initial_bias: initial logit scale and bias (learned).
        gradient_clipnorm: optional global-norm gradient clipping in `fit`.

    Output: query logits `[B, N*Q, N]`; classes with no support example get -1e9.
    Under XLA (`compile(jit_compile=True)`) `N` is the support-set size `S`,
    a static bound, and the classes beyond the episode's get -1e9 too (same
    loss and predictions).
    """

    def __init__(self, backbone, initial_lambda=1.0, initial_scale=10.0, initial_bias=0.0, **kwargs):
        super().__init__(backbone, **kwargs)
        if not initial_lambda > 0:
            raise ValueError(f"`initial_lambda` must be positive, got {initial_lambda}.")
        self.initial_lambda, self.initial_scale, self.initial_bias = (
            float(initial_lambda), float(initial_scale), float(initial_bias))
        constant = keras.initializers.Constant
        self.log_lambda = self.add_weight(shape=(), name="log_lambda", initializer=constant(math.log(initial_lambda)))
        self.scale = self.add_weight(shape=(), name="scale", initializer=constant(self.initial_scale))
        self.bias = self.add_weight(shape=(), name="bias", initializer=constant(self.initial_bias))
        self.built = True

    @property
    def ridge_lambda(self):
        return tf.exp(tf.convert_to_tensor(self.log_lambda))

    def head_weights(self, support_emb, support_y, num_classes):
        """Ridge-regression weights `[B, D, N]` of the support set (padding -1 excluded)."""
        return ridge_regression(support_emb, support_y, self.ridge_lambda, num_classes=num_classes)

    def call(self, inputs, training=False):
        support_emb, support_y, query_emb = self.embedded_episode(inputs, training=training)
        num_classes = episode_num_classes(support_y)
        weights = self.head_weights(support_emb, support_y, num_classes)
        logits = self.scale * tf.matmul(query_emb, weights) + self.bias
        counts = tf.reduce_sum(tf.one_hot(support_y, num_classes), axis=1)
        return mask_absent_classes(logits, counts)

    def adapt(self, support_x, support_y):
        """A plain Keras classifier for one task: the backbone and a `Dense` layer of the solved head."""
        support_x, support_y, num_classes = check_support_set(support_x, support_y)
        embeddings = self.backbone.predict(support_x, verbose=0)
        weights = self.head_weights(embeddings[None], support_y[None], num_classes)[0]
        inputs = keras.Input(shape=support_x.shape[1:])
        head = keras.layers.Dense(num_classes, name="ridge_head")
        outputs = head(clone_model(self.backbone)(inputs))
        scale, bias = float(self.scale.numpy()), float(self.bias.numpy())
        head.set_weights([scale * weights.numpy(), np.full(num_classes, bias, "float32")])
        return keras.Model(inputs, outputs, name="ridge_classifier")

    def get_config(self):
        config = super().get_config()
        config.update(initial_lambda=self.initial_lambda, initial_scale=self.initial_scale,
                      initial_bias=self.initial_bias)
        return config
