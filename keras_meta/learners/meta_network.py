"""Meta Networks (Munkhdalai & Yu 2017): fast weights generated from support-set loss gradients.

A base learner classifies with two layers on the backbone's embedding, each
combining slow weights (meta-learned across tasks) and fast weights (made
for the task): `z = relu(W1 h + b1) + relu(W1* h)`, `logits = W2 z + b2 + W2* z`
(the paper's layer augmentation). The fast weights come from a meta learner:

1. For every support example `i`, the base learner's loss gradient with
   respect to its slow weights, `(dL_i/dW1, dL_i/dW2)`, is the meta information.
2. Weight generators `m1`, `m2` (small MLPs applied to every coordinate of
   those gradients) turn them into per-example fast weights `W1*_i, W2*_i`,
   which are stored in a memory keyed by the example's key embedding `r_i`.
3. A query reads its fast weights from the memory by attention,
   `W* = sum_i softmax_i(scale * cos(r_q, r_i)) W*_i`, and the base learner
   classifies it with slow plus fast weights.

The generated weights are real parameters of the base learner's layers, so
`adapt()` exports them into standard Keras layers. Departures from the
paper, for speed: the key embedding is a learned projection of the shared
backbone's embedding (the paper trains a second network, itself with
task-level fast weights), and the generators read the raw gradients (no
log/sign preprocessing). See `EmbeddingMetaNetwork` for the embedding-based
variant and docs/meta_networks.md for the two side by side.

Example:

>>> import keras, keras_meta
>>> learner = keras_meta.learners.MetaNetwork(keras_meta.models.conv4(), ways=20)
>>> learner.compile(optimizer="adam",
...                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
>>> learner.fit(sampler.dataset(batch_size=1), steps_per_epoch=100)  # doctest: +SKIP
>>> classifier = learner.adapt(support_x, support_y)  # a plain Keras model  # doctest: +SKIP
"""

import keras
import tensorflow as tf

from keras_meta.data.episode_format import MASKED_LOGIT
from keras_meta.learners.base import check_support_set, positive_number
from keras_meta.learners.embedding_based import EmbeddingMetaLearner, cosine_attention, mask_absent_classes
from keras_meta.ops.functional import clone_model
from keras_meta.ops.xla import episode_num_classes, in_xla_context


def weight_generator(hidden_units, name):
    """A coordinate-wise MLP `[..., 1] -> [..., 1]` from a gradient entry to a fast-weight entry."""
    model = keras.Sequential([
        keras.Input((1,)),
        keras.layers.Dense(hidden_units, activation="relu"),
        keras.layers.Dense(1),
    ], name=name)
    return model


def coordinatewise(generator, values):
    """Applies a `[n, 1] -> [n, 1]` generator to every entry of `values`."""
    return tf.reshape(generator(tf.reshape(values, [-1, 1])), tf.shape(values))


@keras.saving.register_keras_serializable(package="keras_meta")
class MetaNetwork(EmbeddingMetaLearner):
    """The original Meta Networks: a base learner with slow and generated fast weights.

    Args:
        backbone: a built Keras model mapping inputs to embeddings `[batch, D]`.
        ways: the most classes an episode may have (the base learner's outputs).
        hidden_units: units of the base learner's hidden layer.
        key_units: size of the memory keys.
        generator_units: hidden units of the fast-weight generators.
        cosine_scale: multiplies the key cosine similarities before the
            softmax of the memory attention (the name the other learners use
            for a fixed cosine temperature).
        gradient_clipnorm: optional global-norm gradient clipping in `fit`.

    Output: query logits `[B, N*Q, N]`, `N` the episode's classes (at most `ways`).
    An episode with more classes than `ways` raises an error; under XLA
    (`compile(jit_compile=True)`), which cannot raise from a compiled step,
    its logits (so the loss) are NaN instead. Under XLA `N` is
    `min(S, ways)` (`S` the support-set size, a static bound) and the
    classes beyond the episode's get -1e9 (same loss and predictions).
    """

    def __init__(self, backbone, ways, hidden_units=64, key_units=64, generator_units=16, cosine_scale=10.0,
                 **kwargs):
        if "attention_scale" in kwargs:
            raise TypeError("`attention_scale` is now `cosine_scale`, the name of the other learners' cosine "
                            "temperature: pass `cosine_scale=`.")
        super().__init__(backbone, **kwargs)
        if int(ways) < 2:
            raise ValueError(f"`ways` must be at least 2, got {ways}.")
        self.ways, self.hidden_units, self.key_units = int(ways), int(hidden_units), int(key_units)
        self.generator_units = int(generator_units)
        self.cosine_scale = positive_number("cosine_scale", cosine_scale,
                                            "it multiplies the key similarities before the memory attention")
        size = self.embedding_size
        self.slow_hidden = keras.layers.Dense(self.hidden_units, name="slow_hidden")
        self.slow_output = keras.layers.Dense(self.ways, name="slow_output")
        self.key_layer = keras.layers.Dense(self.key_units, use_bias=False, name="key")
        self.slow_hidden.build((None, size))
        self.slow_output.build((None, self.hidden_units))
        self.key_layer.build((None, size))
        self.hidden_generator = weight_generator(self.generator_units, "hidden_weight_generator")
        self.output_generator = weight_generator(self.generator_units, "output_weight_generator")
        self.built = True

    def meta_information(self, support_emb, support_y):
        """Per-example loss gradients of the slow weights: `([B, S, D, H], [B, S, H, ways])`.

        The support loss is the softmax cross-entropy over the logits of the
        classes present in the task's support set (the other outputs are
        masked out).
        """
        with tf.GradientTape() as tape:
            hidden_pre = self.slow_hidden(support_emb)
            tape.watch(hidden_pre)
            hidden = tf.nn.relu(hidden_pre)
            logits = self.slow_output(hidden)
            tape.watch(logits)
            present = tf.reduce_sum(tf.one_hot(support_y, self.ways), axis=1) > 0  # the task's classes [B, ways]
            masked = tf.where(present[:, None, :], logits, tf.constant(MASKED_LOGIT, logits.dtype))
            losses = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.maximum(support_y, 0), masked)
            losses = losses * tf.cast(support_y >= 0, losses.dtype)
        # Each example's loss depends on its own pre-activations only, so these are per-example gradients.
        d_hidden, d_logits = tape.gradient(losses, [hidden_pre, logits])
        return (tf.einsum("bsd,bsh->bsdh", support_emb, d_hidden),
                tf.einsum("bsh,bsn->bshn", hidden, d_logits))

    def fast_weights(self, support_emb, support_y):
        """Per-support-example fast weights generated from the meta information."""
        hidden_grads, output_grads = self.meta_information(support_emb, support_y)
        present = tf.cast(support_y >= 0, support_emb.dtype)[:, :, None, None]
        return (coordinatewise(self.hidden_generator, hidden_grads) * present,
                coordinatewise(self.output_generator, output_grads) * present)

    def memory_attention(self, support_emb, support_y, query_emb):
        """Attention of each query over the support memory: `[B, Q, S]`."""
        keys = tf.math.l2_normalize(self.key_layer(support_emb), -1, epsilon=1e-8)
        queries = tf.math.l2_normalize(self.key_layer(query_emb), -1, epsilon=1e-8)
        scores = self.cosine_scale * tf.matmul(queries, keys, transpose_b=True)
        scores = tf.where((support_y >= 0)[:, None, :], scores, tf.constant(MASKED_LOGIT, scores.dtype))
        return tf.nn.softmax(scores)

    def call(self, inputs, training=False):
        support_emb, support_y, query_emb = self.embedded_episode(inputs, training=training)
        num_classes = episode_num_classes(support_y, bound=self.ways)
        if not in_xla_context():  # XLA drops Assert ops: there such episodes get NaN logits (below)
            check = tf.debugging.assert_less_equal(
                num_classes, self.ways,
                message=f"An episode has more classes than this MetaNetwork's `ways` ({self.ways}); build it with "
                        "`ways` at least the largest number of ways it will see.")
            # Before the support loss, whose own check of the labels would otherwise race it in a graph.
            with tf.control_dependencies([check] if check is not None else []):
                support_y = tf.identity(support_y)
        hidden_fast, output_fast = self.fast_weights(support_emb, support_y)
        attention = self.memory_attention(support_emb, support_y, query_emb)
        fast_pre = tf.einsum("bqs,bqd,bsdh->bqh", attention, query_emb, hidden_fast)
        hidden = tf.nn.relu(self.slow_hidden(query_emb)) + tf.nn.relu(fast_pre)
        logits = self.slow_output(hidden) + tf.einsum("bqs,bqh,bshn->bqn", attention, hidden, output_fast)
        logits = logits[..., :num_classes]
        counts = tf.reduce_sum(tf.one_hot(support_y, num_classes), axis=1)
        logits = mask_absent_classes(logits, counts)
        if in_xla_context():
            too_many = tf.reduce_max(support_y, axis=1) >= self.ways
            logits = tf.where(too_many[:, None, None], tf.constant(float("nan"), logits.dtype), logits)
        return logits

    def adapt(self, support_x, support_y):
        """A plain Keras classifier holding the base learner's slow and fast weights and the key memory.

        Fast weights of a query are `sum_i a_i W*_i`, so the classifier keeps
        every support example's fast weights in `Dense` layers and mixes
        their outputs with the attention (`Dot` layers); only standard Keras
        layers, so it loads without keras-meta.
        """
        support_x, support_y, num_classes = check_support_set(support_x, support_y)
        if num_classes > self.ways:
            raise ValueError(f"The support set has {num_classes} classes, more than `ways` = {self.ways}.")
        embeddings = tf.constant(self.backbone.predict(support_x, verbose=0)[None])
        labels = tf.constant(support_y[None], tf.int32)
        hidden_fast, output_fast = (w.numpy()[0] for w in self.fast_weights(embeddings, labels))
        keys = self.key_layer(embeddings).numpy()[0]
        size, count, layers = self.embedding_size, len(support_y), keras.layers

        inputs = keras.Input(shape=support_x.shape[1:])
        embedding = clone_model(self.backbone)(inputs)
        attention = cosine_attention(copy_layer(self.key_layer, size)(embedding), keys, self.cosine_scale,
                                     names=("unit_key", "memory_keys", "memory_attention"))

        fast_hidden_layer = layers.Dense(count * self.hidden_units, use_bias=False, name="fast_hidden")
        per_example = layers.Reshape((count, self.hidden_units))(fast_hidden_layer(embedding))
        fast_hidden = layers.ReLU()(layers.Dot(axes=(1, 1), name="read_fast_hidden")([attention, per_example]))
        hidden = layers.Add(name="hidden")([layers.ReLU()(copy_layer(self.slow_hidden, size)(embedding)), fast_hidden])
        fast_hidden_layer.set_weights([hidden_fast.transpose(1, 0, 2).reshape(size, -1)])

        slow_output = layers.Dense(num_classes, name="slow_output")
        fast_output_layer = layers.Dense(count * num_classes, use_bias=False, name="fast_output")
        per_example = layers.Reshape((count, num_classes))(fast_output_layer(hidden))
        fast_logits = layers.Dot(axes=(1, 1), name="read_fast_output")([attention, per_example])
        outputs = layers.Add(name="logits")([slow_output(hidden), fast_logits])
        kernel, bias = self.slow_output.get_weights()
        slow_output.set_weights([kernel[:, :num_classes], bias[:num_classes]])
        fast_output_layer.set_weights(
            [output_fast[:, :, :num_classes].transpose(1, 0, 2).reshape(self.hidden_units, -1)])
        return keras.Model(inputs, outputs, name="meta_network_classifier")

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if "attention_scale" in config:  # a file saved when `cosine_scale` was called so
            config["cosine_scale"] = config.pop("attention_scale")
        return super().from_config(config)

    def get_config(self):
        config = super().get_config()
        config.update(ways=self.ways, hidden_units=self.hidden_units, key_units=self.key_units,
                      generator_units=self.generator_units, cosine_scale=self.cosine_scale)
        return config


def copy_layer(layer, input_size):
    """A built copy of a `Dense` layer with the same weights (a new layer for a new model)."""
    copy = layer.__class__.from_config(layer.get_config())
    copy.build((None, input_size))
    copy.set_weights(layer.get_weights())
    return copy
