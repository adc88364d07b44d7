"""Layers that Keras lacks: `DropBlock` for backbones, `SupportClassLogits` for adapted classifiers.

Example:

>>> import numpy as np
>>> from keras_meta.models import DropBlock
>>> layer = DropBlock(0.1, block_size=3, seed=0)
>>> x = np.ones((2, 8, 8, 4), "float32")
>>> bool(np.all(layer(x, training=False) == x))  # identity at inference
True
>>> mask = np.asarray(layer(x, training=True)) > 0  # in training: 3x3 blocks of zeros, the rest scaled up
>>> bool(0 < mask.mean() < 1)
True
"""

import keras
import numpy as np
from keras import ops

from keras_meta.data import checks
from keras_meta.data.episode_format import MASKED_LOGIT


def rate_argument(name, value):
    """`value` as a float, checked to be a probability in [0, 1): a `ValueError` names the argument."""
    if not checks.is_number(value) or not 0 <= value < 1:
        raise ValueError(f"`{name}` must be a number in [0, 1), got {value!r}.")
    return float(value)


@keras.saving.register_keras_serializable(package="keras_meta")
class DropBlock(keras.layers.Layer):
    """DropBlock (Ghiasi, Lin & Le, NeurIPS 2018): drops contiguous squares of a feature map in training.

    Block seeds are drawn with probability
    `gamma = rate / block_size**2 * H * W / ((H - block_size + 1) * (W - block_size + 1))`
    among the positions where a whole block fits, each seed zeroes a
    `block_size x block_size` square, independently per channel, and the
    kept units are scaled by `count / kept` (over the batch) so the mean is
    preserved. `block_size` is clipped to the feature map. The identity when
    not training or when `rate` is 0.

    Args:
        rate: the fraction of units to drop, in [0, 1) (`1 - keep_prob` of the paper).
        block_size: the side of the dropped squares.
        seed: an integer seed of the layer's `keras.random.SeedGenerator`.

    Inputs are channels-last feature maps `[batch, H, W, C]` of known H and W.
    """

    def __init__(self, rate, block_size=5, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = rate_argument("rate", rate)
        self.block_size = checks.integer_argument("block_size", block_size)
        if seed is not None:
            seed = checks.integer_argument("seed", seed, minimum=0)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[1] is None or input_shape[2] is None:
            raise ValueError(f"DropBlock takes feature maps [batch, H, W, C] of known H and W, got {input_shape}.")
        self.built = True

    def block_and_gamma(self, height, width):
        """The clipped block size and the seed probability `gamma` for an `height x width` feature map."""
        block = min(self.block_size, height, width)
        valid = (height - block + 1) * (width - block + 1)
        return block, self.rate / block**2 * height * width / valid

    def call(self, inputs, training=False):
        if not training or self.rate == 0:
            return inputs
        height, width = inputs.shape[1], inputs.shape[2]
        block, gamma = self.block_and_gamma(height, width)
        batch, channels = ops.shape(inputs)[0], ops.shape(inputs)[3]
        # The mask in float32 whatever the compute dtype: float16 would round gamma and overflow the count.
        noise = keras.random.uniform((batch, height - block + 1, width - block + 1, channels),
                                     seed=self.seed_generator, dtype="float32")
        seeds = ops.cast(noise < gamma, "float32")
        # Each seed zeroes the block it is the top-left corner of: pad, then a stride-1 max-pool.
        padded = ops.pad(seeds, [[0, 0], [block - 1, block - 1], [block - 1, block - 1], [0, 0]])
        dropped = ops.max_pool(padded, pool_size=block, strides=1, padding="valid") if block > 1 else seeds
        mask = 1.0 - dropped
        scale = ops.cast(ops.size(mask), "float32") / ops.maximum(ops.sum(mask), 1.0)
        return inputs * ops.stop_gradient(ops.cast(mask * scale, inputs.dtype))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, block_size=self.block_size, seed=self.seed)
        return config



@keras.saving.register_keras_serializable(package="keras_meta")
class SupportClassLogits(keras.layers.Layer):
    """Class log-probabilities from similarities to labelled support examples (Matching Networks' read-out).

    For similarities `s [batch, S]` to the `S` support examples with labels
    `support_labels`, class `c` gets
    `log p(c) = logsumexp_{i: y_i = c} s_i - logsumexp_i s_i`, the log of the
    attention mass `softmax(s)` puts on the class, computed without forming
    the probabilities (so without underflow). The outputs are logits for
    `SparseCategoricalCrossentropy(from_logits=True)`; a class without
    support examples gets `MASKED_LOGIT`.

    Args:
        support_labels: the support examples' integer labels in `0..N-1`.
        num_classes: `N`, the number of outputs; by default the largest label + 1.

    Example:

    >>> import numpy as np
    >>> from keras_meta.models import SupportClassLogits
    >>> layer = SupportClassLogits([0, 1, 1])
    >>> s = np.array([[2.0, 0.0, 0.0]], "float32")
    >>> np.round(np.exp(np.asarray(layer(s), "float64")), 4).tolist()  # softmax(s) = [0.787, 0.107, 0.107]
    [[0.787, 0.213]]
    """

    def __init__(self, support_labels, num_classes=None, **kwargs):
        super().__init__(**kwargs)
        labels = np.asarray(support_labels)
        if labels.ndim != 1 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
            raise ValueError(f"`support_labels` must be a non-empty list of integer labels >= 0, "
                             f"got {support_labels!r}.")
        self.support_labels = [int(label) for label in labels]
        if num_classes is None:
            num_classes = int(labels.max()) + 1
        self.num_classes = checks.integer_argument("num_classes", num_classes)
        if self.num_classes <= labels.max():
            raise ValueError(f"`num_classes` ({self.num_classes}) must exceed the largest support label "
                             f"({labels.max()}).")
        members = np.eye(self.num_classes, dtype=bool)[labels]  # [S, N]
        # finite offsets (no -inf constant: int8 calibration and gradients stay finite)
        self._member_offsets = np.where(members, 0.0, MASKED_LOGIT).astype("float32")
        self._present = members.any(axis=0)  # [N]

    def call(self, similarities):
        offsets = ops.cast(self._member_offsets, similarities.dtype)
        per_class = ops.expand_dims(similarities, -1) + offsets  # [batch, S, N]
        class_scores = ops.logsumexp(per_class, axis=-2)
        log_p = class_scores - ops.logsumexp(similarities, axis=-1, keepdims=True)
        return ops.where(self._present, log_p, ops.cast(MASKED_LOGIT, log_p.dtype))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(support_labels=self.support_labels, num_classes=self.num_classes)
        return config
