"""The fine-tuning baseline of Chen et al. 2019 ("A Closer Look at Few-shot Classification"): Baseline and Baseline++.

No meta-learning: the backbone is pre-trained as an ordinary classifier over
all `num_classes` training classes (`compile` + `fit` on `(images, labels)`),
then each few-shot task gets a fresh N-way head fitted to its support set by
`head_steps` steps of gradient descent (backbone frozen by default), which
classifies the task's queries. `head="linear"` is Baseline (a linear layer
and softmax); `head="cosine"` is Baseline++ (logits `cosine_scale` times the
cosine similarity of the embedding and each class's weight vector), in
pre-training and in the per-task heads alike.

On an episode batch, `call` fits the heads inside the graph and returns query
logits `[B, N*Q, N]`, so `evaluate`, `predict` and
`keras_meta.evaluation.evaluate_few_shot` work as for any learner; `adapt`
returns the backbone and the fitted head as a plain Keras model.

Example:

>>> import keras, numpy as np, keras_meta
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(40, 4)).astype("float32")
>>> y = np.arange(40) % 4
>>> learner = keras_meta.learners.FineTuneBaseline(keras_meta.models.mlp((4,), (8,)), num_classes=4,
...                                                 head="cosine", head_steps=5)
>>> learner.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
>>> learner(x).shape  # pre-training: logits over the training classes
TensorShape([40, 4])
>>> _ = learner.fit(x, y, epochs=1, verbose=0)
>>> episode = {"support_x": x[None, :6], "support_y": np.array([[0, 1, 2, 0, 1, 2]]), "query_x": x[None, 6:9]}
>>> learner(episode).shape  # a 3-way head fitted to the support set
TensorShape([1, 3, 3])
>>> learner.adapt(x[:6], np.array([0, 1, 2, 0, 1, 2])).predict(x[6:9], verbose=0).shape
(3, 3)
"""

import keras
import numpy as np
import tensorflow as tf

from keras_meta._map import map_fn
from keras_meta.data.checks import integer_argument, is_number
from keras_meta.data.episode_format import MASKED_LOGIT, QUERY_X, SUPPORT_X, SUPPORT_Y
from keras_meta.learners.base import check_support_set, class_labels, positive_number, unpack_episode
from keras_meta.learners.embedding_based import EmbeddingMetaLearner, check_backbone, mask_absent_classes
from keras_meta.ops.functional import clone_model, functional_call
from keras_meta.ops.xla import episode_num_classes

HEADS = ("linear", "cosine")

EPISODES_IN_FIT = (
    "FineTuneBaseline is not trained on episodes: pre-train it as an ordinary classifier with "
    "`fit(images, labels)` (integer labels over its `num_classes` training classes). Episodes are for "
    "`evaluate`, `predict` and `keras_meta.evaluation.evaluate_few_shot`, where a head is fitted to each task."
)


def unit_vectors(x, axis=-1):
    """`x / |x|` along `axis`, as `keras.layers.UnitNormalization` computes it.

    A zero vector stays zero, with a zero (not NaN) gradient.
    """
    return x * tf.math.rsqrt(tf.maximum(tf.reduce_sum(tf.square(x), axis=axis, keepdims=True), 1e-24))


def numpy_unit_vectors(x, axis=-1):
    return x / np.sqrt(np.maximum(np.sum(np.square(x), axis=axis, keepdims=True), 1e-24))


@keras.saving.register_keras_serializable(package="keras_meta")
class CosineClassifier(keras.layers.Layer):
    """Baseline++'s classifier: logits `scale * cos(x, w_c)` for each class weight vector `w_c`.

    Input `[batch, D]`, output `[batch, units]`; the kernel `[D, units]` is
    normalised column by column in the forward pass, so only its directions
    matter. A keras-meta layer: the learner uses it for pre-training, while
    the classifiers `FineTuneBaseline.adapt` returns use standard layers.
    """

    def __init__(self, units, scale=10.0, **kwargs):
        super().__init__(**kwargs)
        self.units = integer_argument("units", units)
        self.scale = positive_number("scale", scale, "it multiplies the cosine similarities into logits")

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), initializer="glorot_uniform",
                                      name="kernel")

    def call(self, inputs):
        return self.scale * tf.matmul(unit_vectors(inputs), unit_vectors(tf.convert_to_tensor(self.kernel), axis=0))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return dict(super().get_config(), units=self.units, scale=self.scale)


def sgd(loss_fn, params, steps, learning_rate, momentum, weight_decay):
    """`steps` steps of SGD on `loss_fn(params)` (a list of tensors) in one `tf.while_loop`; the final params.

    The update of Chen et al.'s code (PyTorch SGD with dampening equal to the
    momentum): `g = grad + weight_decay * w`, `v = g` at the first step and
    `v = momentum * v + (1 - momentum) * g` after, `w = w - learning_rate * v`.
    No gradient flows back through the steps.
    """
    params = [tf.stop_gradient(tf.convert_to_tensor(p)) for p in params]

    def body(step, params, velocity):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(params)
            loss = loss_fn(params)
        grads = tape.gradient(loss, params)
        grads = [(tf.zeros_like(p) if g is None else tf.convert_to_tensor(g)) + weight_decay * p
                 for g, p in zip(grads, params, strict=True)]
        first = tf.equal(step, 0)
        keep = tf.where(first, 0.0, momentum)
        new = tf.where(first, 1.0, 1.0 - momentum)
        velocity = [tf.cast(keep, v.dtype) * v + tf.cast(new, g.dtype) * g
                    for v, g in zip(velocity, grads, strict=True)]
        params = [p - tf.cast(learning_rate, p.dtype) * v for p, v in zip(params, velocity, strict=True)]
        return step + 1, params, velocity

    velocity = [tf.zeros_like(p) for p in params]
    _, params, _ = tf.while_loop(lambda step, *_: step < steps, body, (tf.constant(0), params, velocity),
                                 maximum_iterations=steps)
    return params


@keras.saving.register_keras_serializable(package="keras_meta")
class FineTuneBaseline(EmbeddingMetaLearner):
    """Baseline / Baseline++ of Chen et al. 2019: a pre-trained classifier whose head is refitted per task.

    Args:
        backbone: a built Keras model mapping inputs to embeddings `[batch, D]`.
        num_classes: the number of training classes of the pre-training head (at least 2).
        head: `"linear"` (Baseline: `x W + b`) or `"cosine"` (Baseline++:
            `cosine_scale * cos(x, w_c)`), for the pre-training head and the
            per-task heads.
        cosine_scale: the fixed scale (inverse temperature) of cosine logits.
            Chen et al.'s code multiplies by 2 (by 10 beyond 200 classes) and
            also learns a norm per class (weight normalisation), so its
            effective scale is learned; here the class vectors are unit
            vectors, so the scale is the whole temperature: 10 by default.
        head_steps: gradient steps of each task's head fit (100, as the paper's
            100 iterations).
        head_learning_rate, head_momentum, head_weight_decay: the per-task
            SGD (Chen et al.'s code: 0.01, momentum 0.9 with dampening 0.9 -- an
            exponential moving average of the gradients -- and weight decay
            0.001 on every head weight); see `sgd`.
        fine_tune_backbone: also update (a copy of) the backbone in each
            task's fit. The learner's own weights never change. It costs a
            backbone forward and backward pass over the support set per step,
            and tasks are fitted one after another: about `head_steps` times
            the cost of a training step on the support set, per task, against
            one forward pass (and a cheap head fit) with the frozen backbone.
        gradient_clipnorm: optional global-norm gradient clipping in pre-training.

    Per-task fit: full-batch (all support examples of the task at once)
    gradient descent on the mean cross-entropy of the support set, padded
    slots (label -1) left out; Chen et al. use mini-batches of 4 drawn at
    random. A linear head starts at zero; a cosine head starts at the mean
    unit embedding of each class (weight imprinting: its weights cannot be
    zero), so the fit is deterministic and a padded task gives the logits of
    the same task unpadded. Chen et al. start both from PyTorch's random
    initialisation. Backbone batch normalisation runs in inference mode.

    Input: images `[batch, ...]` (pre-training: `num_classes` logits), or an
    episode dict (query logits `[B, N*Q, N]`; classes with no support example,
    the padding of variable-way episodes, get -1e9).
    """

    def __init__(self, backbone, num_classes, head="linear", cosine_scale=10.0, head_steps=100,
                 head_learning_rate=0.01, head_momentum=0.9, head_weight_decay=0.001, fine_tune_backbone=False,
                 **kwargs):
        # Every argument is checked before anything is built.
        num_classes = integer_argument("num_classes", num_classes, minimum=2, unit=" (training classes)")
        if head not in HEADS:
            raise ValueError(f"`head` must be one of {HEADS} (Baseline or Baseline++), got {head!r}.")
        cosine_scale = positive_number("cosine_scale", cosine_scale,
                                       "it multiplies the cosine similarities into logits")
        head_steps = integer_argument("head_steps", head_steps, unit=" (gradient steps of each task's head)")
        head_learning_rate = positive_number("head_learning_rate", head_learning_rate)
        if not is_number(head_momentum) or not 0 <= head_momentum < 1:
            raise ValueError(f"`head_momentum` must be a number in [0, 1), got {head_momentum!r}.")
        if not is_number(head_weight_decay) or head_weight_decay < 0:
            raise ValueError(f"`head_weight_decay` must be a non-negative number, got {head_weight_decay!r}.")
        if not isinstance(fine_tune_backbone, (bool, np.bool_)):
            raise ValueError(f"`fine_tune_backbone` must be True or False, got {fine_tune_backbone!r}.")
        check_backbone(backbone)
        super().__init__(backbone, **kwargs)
        self.num_classes, self.head, self.cosine_scale = num_classes, head, cosine_scale
        self.head_steps, self.head_learning_rate = head_steps, head_learning_rate
        self.head_momentum, self.head_weight_decay = float(head_momentum), float(head_weight_decay)
        self.fine_tune_backbone = bool(fine_tune_backbone)
        if head == "linear":
            self.classifier = keras.layers.Dense(num_classes, name="classifier")
        else:
            self.classifier = CosineClassifier(num_classes, cosine_scale, name="classifier")
        self.classifier.build((None, self.embedding_size))
        self.built = True

    # -- pre-training: an ordinary classifier -------------------------------------

    def call(self, inputs, training=False):
        if isinstance(inputs, dict):
            return self.episode_logits(inputs)
        return self.classifier(self.backbone(inputs, training=training))

    def fit(self, x=None, y=None, *args, **kwargs):
        """Keras' `fit` on `(images, labels)` classification batches over the `num_classes` training classes.

        Episodes raise a `ValueError`: this learner is not trained on them.
        """
        if holds_episodes(x):
            raise ValueError(EPISODES_IN_FIT)
        return super().fit(x, y, *args, **kwargs)

    def train_on_batch(self, x, y=None, *args, **kwargs):
        """Keras' `train_on_batch` on a batch of images and labels; an episode raises a `ValueError`."""
        if holds_episodes(x):
            raise ValueError(EPISODES_IN_FIT)
        return super().train_on_batch(x, y, *args, **kwargs)

    def compute_update(self, x, y, sample_weight):
        if isinstance(x, dict):  # episodes from a generator: the error stops the trace, which is not kept
            self.train_function = None
            raise ValueError(EPISODES_IN_FIT)
        return super().compute_update(x, y, sample_weight)

    def apply_update(self, x, y, sample_weight, loss, predictions, gradients, state, saved):
        # The shared guarded update reads an episode's inputs: a batch of images stands in as the support
        # inputs of one task (a NaN image is reported as a non-finite support input).
        images = tf.convert_to_tensor(x)
        episode = {SUPPORT_X: images[None], SUPPORT_Y: tf.zeros([1, tf.shape(images)[0]], tf.int32),
                   QUERY_X: images[None, :0]}
        return super().apply_update(episode, y, sample_weight, loss, predictions, gradients, state, saved)

    # -- the per-task heads -----------------------------------------------------------

    def initial_head(self, support_emb, support_y, num_classes):
        """The head weights each task's fit starts from, batched over tasks: `[kernel [B, D, N](, bias [B, N])]`."""
        support_emb = tf.convert_to_tensor(support_emb)
        tasks, dims = tf.shape(support_emb)[0], tf.shape(support_emb)[2]
        if self.head == "linear":
            return [tf.zeros([tasks, dims, num_classes], support_emb.dtype),
                    tf.zeros([tasks, num_classes], support_emb.dtype)]
        one_hot = tf.one_hot(support_y, num_classes, dtype=support_emb.dtype)  # padding (-1): a zero row
        sums = tf.matmul(one_hot, unit_vectors(support_emb), transpose_a=True)  # [B, N, D]
        means = sums / tf.maximum(tf.reduce_sum(one_hot, axis=1), 1.0)[..., None]
        return [tf.transpose(means, [0, 2, 1])]

    def head_logits(self, head, embeddings):
        """Logits `[B, M, N]` of embeddings `[B, M, D]` under the head weights of each task."""
        if self.head == "linear":
            kernel, bias = head
            return tf.matmul(embeddings, kernel) + bias[:, None, :]
        return self.cosine_scale * tf.matmul(unit_vectors(embeddings), unit_vectors(head[0], axis=1))

    def support_loss(self, head, support_emb, support_y, num_classes):
        """The sum over tasks of each task's mean support cross-entropy; padding and absent classes left out."""
        valid = support_y >= 0
        present = tf.reduce_sum(tf.one_hot(support_y, num_classes), axis=1) > 0  # [B, N]
        logits = self.head_logits(head, support_emb)
        logits = tf.where(present[:, None, :], logits, tf.constant(MASKED_LOGIT, logits.dtype))
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.where(valid, support_y, 0), logits=logits)
        weights = tf.cast(valid, losses.dtype)
        return tf.reduce_sum(tf.reduce_sum(losses * weights, axis=1) / tf.maximum(tf.reduce_sum(weights, axis=1), 1.0))

    def descend(self, loss_fn, params):
        return sgd(loss_fn, params, self.head_steps, self.head_learning_rate, self.head_momentum,
                   self.head_weight_decay)

    def fit_heads(self, support_emb, support_y, num_classes):
        """The fitted head weights of each task (backbone frozen): embeddings `[B, S, D]`, labels `[B, S]`."""
        support_emb, support_y = tf.stop_gradient(tf.convert_to_tensor(support_emb)), tf.cast(support_y, tf.int32)
        start = self.initial_head(support_emb, support_y, num_classes)
        return self.descend(lambda head: self.support_loss(head, support_emb, support_y, num_classes), start)

    def fine_tune_task(self, support_x, support_y, num_classes):
        """`(backbone weights, head weights)` of one task's fit with the backbone updated too.

        `support_x [S, ...]`, `support_y [S]`; the backbone runs functionally
        on a copy of its weights, in inference mode.
        """
        support_y = tf.cast(support_y, tf.int32)[None]
        weights = [tf.convert_to_tensor(v) for v in self.backbone.trainable_variables]
        state = [tf.convert_to_tensor(v) for v in self.backbone.non_trainable_variables]
        count = len(weights)

        def embed(backbone_weights):
            return functional_call(self.backbone, backbone_weights, support_x, training=False, state=state)[None]

        def loss(params):
            return self.support_loss(params[count:], embed(params[:count]), support_y, num_classes)

        params = self.descend(loss, weights + self.initial_head(embed(weights), support_y, num_classes))
        return params[:count], params[count:]

    def episode_logits(self, inputs):
        """Query logits `[B, Q, N]` of an episode batch, each task's head fitted to its support set."""
        support_x, support_y, query_x = unpack_episode(inputs)
        support_y = class_labels(support_y)
        num_classes = episode_num_classes(support_y)
        counts = tf.reduce_sum(tf.one_hot(support_y, num_classes), axis=1)
        if not self.fine_tune_backbone:
            support_emb, query_emb = self.embed_episode(support_x, query_x, training=False)
            logits = self.head_logits(self.fit_heads(support_emb, support_y, num_classes), query_emb)
        else:
            def task_logits(task):
                task_support_x, task_support_y, task_query_x = task
                weights, head = self.fine_tune_task(task_support_x, task_support_y, num_classes)
                state = [tf.convert_to_tensor(v) for v in self.backbone.non_trainable_variables]
                query_emb = functional_call(self.backbone, weights, task_query_x, training=False, state=state)
                return self.head_logits(head, query_emb[None])[0]

            logits = map_fn(task_logits, (support_x, support_y, query_x),
                            fn_output_signature=tf.TensorSpec([None, None], self.compute_dtype))
        return mask_absent_classes(logits, counts)

    def adapt(self, support_x, support_y):
        """A plain Keras classifier for one task: inputs `[batch, ...]` -> `N` logits.

        A copy of the backbone (fine-tuned on the task with
        `fine_tune_backbone=True`) and the head fitted to `support_x`,
        `support_y` (labels `0..N-1`), in standard Keras layers: `Dense` for
        the linear head; `UnitNormalization` and a bias-free `Dense` holding
        the scaled unit class vectors for the cosine head. It loads with
        `keras.saving.load_model` without keras-meta (when the backbone's
        layers are standard).
        """
        support_x, support_y, num_classes = check_support_set(support_x, support_y)
        dtype = keras.backend.standardize_dtype(self.backbone.inputs[0].dtype)
        inputs = tf.convert_to_tensor(support_x.astype(dtype, copy=False))
        labels = tf.convert_to_tensor(support_y.astype("int32"))
        if self.fine_tune_backbone:
            weights, head = tf.function(lambda x, y: self.fine_tune_task(x, y, num_classes))(inputs, labels)
            head = [h[0] for h in head]
        else:
            weights = None
            fit = tf.function(lambda x, y: self.fit_heads(self.backbone(x, training=False)[None], y[None],
                                                          num_classes))
            head = [h[0] for h in fit(inputs, labels)]
        head = [h.numpy() for h in head]
        model_inputs = keras.Input(shape=support_x.shape[1:], dtype=dtype)
        features = clone_model(self.backbone, weights)(model_inputs)
        if self.head == "linear":
            layer = keras.layers.Dense(num_classes, name="head")
            outputs = layer(features)
            layer.set_weights(head)
        else:
            features = keras.layers.UnitNormalization(name="unit_embedding")(features)
            layer = keras.layers.Dense(num_classes, use_bias=False, name="head")
            outputs = layer(features)
            layer.set_weights([self.cosine_scale * numpy_unit_vectors(head[0], axis=0)])
        return keras.Model(model_inputs, outputs, name="fine_tuned_classifier")

    def get_config(self):
        config = super().get_config()
        config.update(num_classes=self.num_classes, head=self.head, cosine_scale=self.cosine_scale,
                      head_steps=self.head_steps, head_learning_rate=self.head_learning_rate,
                      head_momentum=self.head_momentum, head_weight_decay=self.head_weight_decay,
                      fine_tune_backbone=self.fine_tune_backbone)
        return config


def holds_episodes(x):
    """True when `fit`'s `x` is an episode dict, an episode dataset or an episode stream."""
    if getattr(x, "episode_stream", None) is not None:
        return True
    if isinstance(x, tf.data.Dataset):
        spec = x.element_spec
        x = spec[0] if isinstance(spec, tuple) and spec else spec
    return isinstance(x, dict) and SUPPORT_X in x
