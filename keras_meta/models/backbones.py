"""Standard few-shot backbones.

Example:

>>> from keras_meta import models
>>> encoder = models.conv4(input_shape=(28, 28, 1))      # 64-d embeddings
>>> classifier = models.conv4(num_classes=5)             # with a dense head (MAML)
>>> encoder.output_shape, classifier.output_shape
((None, 64), (None, 5))
>>> models.conv4(input_shape=(28, 28, 1), pool_last_block=False).output_shape  # 3x3x64
(None, 576)
"""

import keras


def conv4(input_shape=(28, 28, 1), filters=64, blocks=4, num_classes=None, pool_last_block=True, name="conv4"):
    """The 4-block convolutional backbone of few-shot learning.

    Each block is 3x3 conv (`filters`) -> BatchNormalization -> ReLU -> 2x2
    max-pool; the output is flattened into an embedding, followed by a dense
    layer of `num_classes` logits when `num_classes` is given.
    `pool_last_block=False` leaves out the last max-pool, so the embedding
    keeps a coarse spatial layout (576-d instead of 64-d for 28x28 inputs).
    """
    layers = [keras.Input(shape=input_shape)]
    for block in range(blocks):
        layers += [
            keras.layers.Conv2D(filters, 3, padding="same", name=f"block{block + 1}_conv"),
            keras.layers.BatchNormalization(name=f"block{block + 1}_bn"),
            keras.layers.ReLU(name=f"block{block + 1}_relu"),
        ]
        if pool_last_block or block < blocks - 1:
            layers.append(keras.layers.MaxPooling2D(2, name=f"block{block + 1}_pool"))
    layers.append(keras.layers.Flatten(name="embedding"))
    if num_classes is not None:
        layers.append(keras.layers.Dense(num_classes, name="logits"))
    return keras.Sequential(layers, name=name)


def mlp(input_shape, hidden_units=(64, 64), activation="relu", num_outputs=None, name="mlp"):
    """A multilayer perceptron: flatten, dense `hidden_units`, optional output layer."""
    layers = [keras.Input(shape=input_shape), keras.layers.Flatten()]
    layers += [keras.layers.Dense(units, activation=activation) for units in hidden_units]
    if num_outputs is not None:
        layers.append(keras.layers.Dense(num_outputs, name="outputs"))
    return keras.Sequential(layers, name=name)
