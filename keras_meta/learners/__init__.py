"""Meta-learners: each a `keras.Model` trained on episodes with `compile` + `fit`."""

from keras_meta.learners.anil import ANIL
from keras_meta.learners.base import MetaLearner
from keras_meta.learners.gradient_based import GradientMetaLearner
from keras_meta.learners.imaml import iMAML
from keras_meta.learners.learnable_optimizer import LearnableOptimizer
from keras_meta.learners.maml import MAML
from keras_meta.learners.meta_sgd import MetaSGD
from keras_meta.learners.prototypical import PrototypicalNetwork
from keras_meta.learners.reptile import Reptile

__all__ = [
    "ANIL",
    "GradientMetaLearner",
    "LearnableOptimizer",
    "MAML",
    "MetaLearner",
    "MetaSGD",
    "PrototypicalNetwork",
    "Reptile",
    "iMAML",
]
