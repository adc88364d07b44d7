"""Learner arguments that would make training a no-op, or go the wrong way, are refused when the learner is built."""

import keras
import numpy as np
import pytest

from keras_meta import learners, models


def mlp():
    return models.mlp((3,), (4,), num_outputs=2)


@pytest.mark.parametrize("build, message", [
    (lambda: learners.MAML(mlp(), inner_learning_rate=-0.1),
     r"`inner_learning_rate` must be a positive number, got -0\.1"),
    (lambda: learners.MAML(mlp(), inner_learning_rate=0), r"`inner_learning_rate` must be a positive number, got 0"),
    (lambda: learners.MAML(mlp(), inner_learning_rate=float("nan")), r"`inner_learning_rate` must be a positive"),
    (lambda: learners.MAML(mlp(), inner_steps=3, first_order=True, truncation=1), r"`truncation` has no effect"),
    (lambda: learners.ANIL(mlp(), inner_learning_rate=-1.0), r"`inner_learning_rate` must be a positive number"),
    (lambda: learners.iMAML(mlp(), cg_steps=0), r"`cg_steps` must be at least 1"),
    (lambda: learners.iMAML(mlp(), inner_learning_rate=-0.01), r"`inner_learning_rate` must be a positive number"),
    (lambda: learners.Reptile(mlp(), inner_steps=0), r"Reptile's `inner_steps` must be at least 1"),
    (lambda: learners.Reptile(mlp(), inner_optimizer=keras.optimizers.SGD(-0.1)),
     r"`inner_optimizer's learning_rate` must be a positive number"),
    (lambda: learners.PrototypicalNetwork(mlp(), distance="cosine", cosine_scale=0),
     r"`cosine_scale` must be a positive"),
    (lambda: learners.MatchingNetwork(mlp(), cosine_scale=-5), r"`cosine_scale` must be a positive number, got -5"),
    (lambda: learners.MetaNetwork(mlp(), ways=2, cosine_scale=np.inf), r"`cosine_scale` must be a positive"),
    (lambda: learners.PrototypicalNetwork(mlp(), on_non_finite="ignore"), r"`on_non_finite` must be one of"),
])
def test_meaningless_arguments_are_refused(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_the_boundaries_are_accepted():
    assert learners.MAML(mlp(), inner_learning_rate=1e-6).inner_learning_rate == 1e-6
    assert learners.iMAML(mlp(), cg_steps=1).cg_steps == 1
    assert learners.MatchingNetwork(mlp(), cosine_scale=1).cosine_scale == 1.0
    learners.MAML(mlp(), inner_steps=3, truncation=1)
    learners.Reptile(mlp(), inner_steps=1)
