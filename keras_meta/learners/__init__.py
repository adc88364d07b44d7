"""Meta-learners: each a `keras.Model` trained on episodes with `compile` + `fit`."""

from keras_meta.learners.anil import ANIL
from keras_meta.learners.base import MetaLearner
from keras_meta.learners.embedding_based import EmbeddingMetaLearner
from keras_meta.learners.embedding_meta_network import EmbeddingMetaNetwork
from keras_meta.learners.finetune import FineTuneBaseline
from keras_meta.learners.gradient_based import GradientMetaLearner, auto_parallel_tasks
from keras_meta.learners.gradient_transforms import GradientTransform, KroneckerTransform, MetaCurvatureTransform
from keras_meta.learners.guard import NonFiniteError
from keras_meta.learners.imaml import iMAML
from keras_meta.learners.learnable_optimizer import LearnableOptimizer
from keras_meta.learners.maml import MAML
from keras_meta.learners.maml_plus_plus import MAMLPlusPlus
from keras_meta.learners.matching import AttentionLSTMEmbedding, MatchingNetwork
from keras_meta.learners.meta_network import MetaNetwork
from keras_meta.learners.meta_sgd import MetaSGD
from keras_meta.learners.prototypical import PrototypicalNetwork
from keras_meta.learners.r2d2 import R2D2
from keras_meta.learners.reptile import Reptile

__all__ = [
    "ANIL",
    "AttentionLSTMEmbedding",
    "EmbeddingMetaLearner",
    "EmbeddingMetaNetwork",
    "FineTuneBaseline",
    "GradientMetaLearner",
    "GradientTransform",
    "KroneckerTransform",
    "LearnableOptimizer",
    "MAML",
    "MAMLPlusPlus",
    "MatchingNetwork",
    "MetaLearner",
    "MetaNetwork",
    "MetaCurvatureTransform",
    "MetaSGD",
    "NonFiniteError",
    "PrototypicalNetwork",
    "R2D2",
    "Reptile",
    "auto_parallel_tasks",
    "iMAML",
]
