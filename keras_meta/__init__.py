"""keras-meta: meta-learning and few-shot learning for Keras 3 on TensorFlow.

Example:

>>> import keras_meta
>>> images, labels, alphabets = keras_meta.datasets.omniglot.load("small1")
>>> sampler = keras_meta.data.EpisodeSampler(images, labels, ways=5, shots=1, queries=15)
>>> learner = keras_meta.learners.PrototypicalNetwork(keras_meta.models.conv4())
"""

from keras_meta._backend import enable_onednn_cpu_kernels, ensure_tensorflow_backend

enable_onednn_cpu_kernels()
ensure_tensorflow_backend()

from keras_meta import callbacks  # noqa: E402
from keras_meta import data  # noqa: E402
from keras_meta import datasets  # noqa: E402
from keras_meta import evaluation  # noqa: E402
from keras_meta import learners  # noqa: E402
from keras_meta import lite  # noqa: E402
from keras_meta import metrics  # noqa: E402
from keras_meta import models  # noqa: E402
from keras_meta import ops  # noqa: E402
from keras_meta import runs  # noqa: E402

__version__ = "0.1.0"

__all__ = ["callbacks", "data", "datasets", "evaluation", "learners", "lite", "metrics", "models", "ops", "runs", "__version__"]
