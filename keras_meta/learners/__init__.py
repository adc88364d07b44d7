"""Meta-learners: each a `keras.Model` trained on episodes with `compile` + `fit`."""

from keras_meta.learners.base import MetaLearner
from keras_meta.learners.prototypical import PrototypicalNetwork

__all__ = ["MetaLearner", "PrototypicalNetwork"]
