"""Standard few-shot backbones: Conv-4, ResNet-12, WRN-28-10 and an MLP.

Every image backbone takes channels-last `input_shape`, ends in an embedding
layer named `"embedding"`, adds a `Dense(num_classes)` head named `"logits"`
when `num_classes` is given, and, with `rescale=` a number, starts with a
`Rescaling` layer so that uint8 images can be fed as stored. See
docs/backbones.md.

Example:

>>> from keras_meta import models
>>> encoder = models.conv4(input_shape=(28, 28, 1))      # 64-d embeddings
>>> classifier = models.conv4(num_classes=5)             # with a dense head (MAML)
>>> encoder.output_shape, classifier.output_shape
((None, 64), (None, 5))
>>> models.conv4(input_shape=(28, 28, 1), pool_last_block=False).output_shape  # 3x3x64
(None, 576)
>>> models.resnet12((16, 16, 3), filters=(4, 4, 4, 8), drop_rate=0.1, rescale=1 / 255).output_shape
(None, 8)
>>> models.wrn28_10((16, 16, 3), depth=10, width=1, num_classes=5).output_shape
(None, 5)
"""

import keras
import numpy as np

from keras_meta.data import checks
from keras_meta.models.layers import DropBlock, rate_argument


def _image_shape(input_shape, min_size=1):
    """`input_shape` as a tuple `(H, W, C)` of positive integers, H and W at least `min_size`."""
    if isinstance(input_shape, (str, bytes)) or not hasattr(input_shape, "__len__") or len(input_shape) != 3:
        raise ValueError(f"`input_shape` must be (height, width, channels), got {input_shape!r}.")
    height, width, channels = (checks.integer_argument(f"input_shape[{i}]", v) for i, v in enumerate(input_shape))
    if height < min_size or width < min_size:
        raise ValueError(f"`input_shape` must be at least {min_size}x{min_size} for this backbone to pool it down, "
                         f"got {input_shape!r}.")
    return height, width, channels


def _num_classes(num_classes):
    return None if num_classes is None else checks.integer_argument("num_classes", num_classes)


def _rescale(rescale):
    """None, or `rescale` as a float: a finite, non-zero number."""
    if rescale is None:
        return None
    if not checks.is_number(rescale) or rescale == 0:
        raise ValueError(f"`rescale` must be None or a finite non-zero number (such as 1 / 255), got {rescale!r}.")
    return float(rescale)


def _flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"`{name}` must be True or False, got {value!r}.")
    return bool(value)


def _inputs(input_shape, rescale):
    """The model's `keras.Input` and the tensor the first layer takes (rescaled when `rescale` is given)."""
    inputs = keras.Input(shape=input_shape)
    if rescale is None:
        return inputs, inputs
    return inputs, keras.layers.Rescaling(rescale, name="rescale")(inputs)


def conv4(input_shape=(28, 28, 1), filters=64, blocks=4, num_classes=None, pool_last_block=True, global_pool=False,
          rescale=None, name="conv4"):
    """The 4-block convolutional backbone of few-shot learning (Vinyals et al. 2016, Snell et al. 2017, MAML).

    Each block is 3x3 conv (`filters`) -> BatchNormalization -> ReLU -> 2x2
    max-pool; the output is flattened into an embedding, followed by a dense
    layer of `num_classes` logits when `num_classes` is given.
    `pool_last_block=False` leaves out the last max-pool, so the embedding
    keeps a coarse spatial layout (576-d instead of 64-d for 28x28 inputs).
    `global_pool=True` averages the last feature map instead of flattening
    it: a `filters`-d embedding for any input size (84x84 as 105x105).
    `rescale`: a first `Rescaling(rescale)` layer (uint8 inputs).
    The convolutions have no bias, as in the ResNets: batch normalisation
    right after each takes out any per-channel shift, so a bias would never
    change an output or receive a gradient.
    """
    filters = checks.integer_argument("filters", filters)
    blocks = checks.integer_argument("blocks", blocks)
    pool_last_block, global_pool = _flag("pool_last_block", pool_last_block), _flag("global_pool", global_pool)
    pooled = blocks if pool_last_block else blocks - 1
    input_shape = _image_shape(input_shape, min_size=2**pooled)
    num_classes, rescale = _num_classes(num_classes), _rescale(rescale)
    layers = [keras.Input(shape=input_shape)]
    if rescale is not None:
        layers.append(keras.layers.Rescaling(rescale, name="rescale"))
    for block in range(blocks):
        layers += [
            # no bias: the batch normalisation after it removes any per-channel shift (its offset is the bias)
            keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"block{block + 1}_conv"),
            keras.layers.BatchNormalization(name=f"block{block + 1}_bn"),
            keras.layers.ReLU(name=f"block{block + 1}_relu"),
        ]
        if pool_last_block or block < blocks - 1:
            layers.append(keras.layers.MaxPooling2D(2, name=f"block{block + 1}_pool"))
    if global_pool:
        layers.append(keras.layers.GlobalAveragePooling2D(name="embedding"))
    else:
        layers.append(keras.layers.Flatten(name="embedding"))
    if num_classes is not None:
        layers.append(keras.layers.Dense(num_classes, name="logits"))
    return keras.Sequential(layers, name=name)


def resnet12(input_shape=(84, 84, 3), filters=(64, 160, 320, 640), num_classes=None, drop_rate=0.0, dropblock_size=5,
             rescale=None, name="resnet12"):
    """ResNet-12 of TADAM (Oreshkin et al. 2018) and MetaOptNet (Lee et al. 2019): a 640-d embedding.

    Four residual blocks of `filters[i]` channels: three 3x3 conv ->
    BatchNormalization -> LeakyReLU(0.1) (no activation after the third),
    plus a 1x1 conv -> BatchNormalization shortcut, added, LeakyReLU(0.1),
    2x2 max-pool, then `DropBlock(drop_rate, dropblock_size)` when
    `drop_rate > 0` (training only). Global average pooling gives the
    embedding (`filters[-1]`-d: 84x84 inputs end as 5x5 maps), then a
    `Dense(num_classes)` head when `num_classes` is given. Inputs must be at
    least 16x16. `rescale`: a first `Rescaling(rescale)` layer.
    """
    if isinstance(filters, (str, bytes)) or not hasattr(filters, "__len__") or len(filters) != 4:
        raise ValueError(f"`filters` must be 4 positive integers, one per residual block, got {filters!r}.")
    filters = [checks.integer_argument(f"filters[{i}]", f) for i, f in enumerate(filters)]
    input_shape = _image_shape(input_shape, min_size=16)
    num_classes, rescale = _num_classes(num_classes), _rescale(rescale)
    drop_rate = rate_argument("drop_rate", drop_rate)
    dropblock_size = checks.integer_argument("dropblock_size", dropblock_size)
    inputs, x = _inputs(input_shape, rescale)
    for block, channels in enumerate(filters, 1):
        prefix = f"block{block}"
        shortcut = keras.layers.Conv2D(channels, 1, use_bias=False, name=f"{prefix}_shortcut_conv")(x)
        shortcut = keras.layers.BatchNormalization(name=f"{prefix}_shortcut_bn")(shortcut)
        for conv in (1, 2, 3):
            x = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False, name=f"{prefix}_conv{conv}")(x)
            x = keras.layers.BatchNormalization(name=f"{prefix}_bn{conv}")(x)
            if conv < 3:
                x = keras.layers.LeakyReLU(0.1, name=f"{prefix}_relu{conv}")(x)
        x = keras.layers.Add(name=f"{prefix}_add")([x, shortcut])
        x = keras.layers.LeakyReLU(0.1, name=f"{prefix}_relu")(x)
        x = keras.layers.MaxPooling2D(2, name=f"{prefix}_pool")(x)
        if drop_rate > 0:
            x = DropBlock(drop_rate, block_size=dropblock_size, name=f"{prefix}_dropblock")(x)
    outputs = keras.layers.GlobalAveragePooling2D(name="embedding")(x)
    if num_classes is not None:
        outputs = keras.layers.Dense(num_classes, name="logits")(outputs)
    return keras.Model(inputs, outputs, name=name)


def wrn28_10(input_shape=(84, 84, 3), depth=28, width=10, num_classes=None, dropout_rate=0.0, rescale=None,
             name="wrn28_10"):
    """Wide ResNet (Zagoruyko & Komodakis 2016), as in LEO (Rusu et al. 2019) and S2M2: a 640-d embedding.

    A 3x3 conv of 16 filters, then three groups of `(depth - 4) / 6`
    pre-activation basic blocks (BN -> ReLU -> 3x3 conv -> BN -> ReLU ->
    dropout -> 3x3 conv, plus the input, or a 1x1 conv of the activated
    input when the shape changes) of `16 * width`, `32 * width` and
    `64 * width` filters, strides 1, 2 and 2; a last BN -> ReLU and global
    average pooling give the embedding (`64 * width`-d), then a
    `Dense(num_classes)` head when `num_classes` is given. `dropout_rate`:
    the `Dropout` inside each block (training only). `rescale`: a first
    `Rescaling(rescale)` layer.
    """
    depth = checks.integer_argument("depth", depth, minimum=10)
    if (depth - 4) % 6:
        raise ValueError(f"`depth` must be 6 * n + 4 (10, 16, 22, 28, ...), n blocks per group, got {depth}.")
    width = checks.integer_argument("width", width)
    input_shape = _image_shape(input_shape)
    num_classes, rescale = _num_classes(num_classes), _rescale(rescale)
    dropout_rate = rate_argument("dropout_rate", dropout_rate)
    inputs, x = _inputs(input_shape, rescale)
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, name="stem_conv")(x)
    for group, (channels, stride) in enumerate(zip((16 * width, 32 * width, 64 * width), (1, 2, 2), strict=True), 1):
        for block in range(1, (depth - 4) // 6 + 1):
            prefix = f"group{group}_block{block}"
            strides = stride if block == 1 else 1
            activated = keras.layers.BatchNormalization(name=f"{prefix}_bn1")(x)
            activated = keras.layers.ReLU(name=f"{prefix}_relu1")(activated)
            if strides != 1 or x.shape[-1] != channels:
                shortcut = keras.layers.Conv2D(channels, 1, strides=strides, use_bias=False,
                                               name=f"{prefix}_shortcut_conv")(activated)
            else:
                shortcut = x
            y = keras.layers.Conv2D(channels, 3, strides=strides, padding="same", use_bias=False,
                                    name=f"{prefix}_conv1")(activated)
            y = keras.layers.BatchNormalization(name=f"{prefix}_bn2")(y)
            y = keras.layers.ReLU(name=f"{prefix}_relu2")(y)
            if dropout_rate > 0:
                y = keras.layers.Dropout(dropout_rate, name=f"{prefix}_dropout")(y)
            y = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False, name=f"{prefix}_conv2")(y)
            x = keras.layers.Add(name=f"{prefix}_add")([y, shortcut])
    x = keras.layers.BatchNormalization(name="final_bn")(x)
    x = keras.layers.ReLU(name="final_relu")(x)
    outputs = keras.layers.GlobalAveragePooling2D(name="embedding")(x)
    if num_classes is not None:
        outputs = keras.layers.Dense(num_classes, name="logits")(outputs)
    return keras.Model(inputs, outputs, name=name)


def mlp(input_shape, hidden_units=(64, 64), activation="relu", num_outputs=None, rescale=None, name="mlp"):
    """A multilayer perceptron: (rescale,) flatten, dense `hidden_units`, optional output layer."""
    if isinstance(input_shape, (int, np.integer)):
        input_shape = (input_shape,)
    if isinstance(input_shape, (str, bytes)) or not hasattr(input_shape, "__len__") or not len(input_shape):
        raise ValueError(f"`input_shape` must be a tuple of positive integers, got {input_shape!r}.")
    input_shape = tuple(checks.integer_argument(f"input_shape[{i}]", v) for i, v in enumerate(input_shape))
    if isinstance(hidden_units, (str, bytes)) or not hasattr(hidden_units, "__iter__"):
        raise ValueError(f"`hidden_units` must be a sequence of positive integers, got {hidden_units!r}.")
    hidden_units = [checks.integer_argument(f"hidden_units[{i}]", u) for i, u in enumerate(hidden_units)]
    num_outputs = None if num_outputs is None else checks.integer_argument("num_outputs", num_outputs)
    rescale = _rescale(rescale)
    layers = [keras.Input(shape=input_shape)]
    if rescale is not None:
        layers.append(keras.layers.Rescaling(rescale, name="rescale"))
    layers.append(keras.layers.Flatten())
    layers += [keras.layers.Dense(units, activation=activation) for units in hidden_units]
    if num_outputs is not None:
        layers.append(keras.layers.Dense(num_outputs, name="outputs"))
    return keras.Sequential(layers, name=name)
