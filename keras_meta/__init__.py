"""keras-meta: meta-learning and few-shot learning for Keras 3 on TensorFlow.

Example:

>>> import keras_meta
>>> images, labels, alphabets = keras_meta.datasets.omniglot.load("small1")
>>> sampler = keras_meta.data.EpisodeSampler(images, labels, ways=5, shots=1, queries=15)
>>> learner = keras_meta.learners.PrototypicalNetwork(keras_meta.models.conv4())
"""

from keras_meta._backend import ensure_tensorflow_backend, onednn_enabled

ensure_tensorflow_backend()

from keras_meta import (  # noqa: E402  (after the backend check)
    callbacks,
    data,
    datasets,
    evaluation,
    learners,
    lite,
    metrics,
    models,
    ops,
    runs,
)

__version__ = "0.1.0"

__all__ = ["callbacks", "data", "datasets", "evaluation", "learners", "lite", "metrics", "models", "ops", "runs",
           "onednn_enabled", "__version__"]
