import numpy as np
import pytest
import tensorflow as tf

from keras_meta.data import EpisodeSampler
from keras_meta.evaluation import confidence_interval, evaluate_episodes


def test_confidence_interval_formula():
    scores = np.array([0.5, 0.7, 0.9, 0.6])
    mean, ci = confidence_interval(scores)
    assert mean == pytest.approx(0.675)
    assert ci == pytest.approx(1.96 * np.sqrt(((scores - 0.675) ** 2).sum() / 3) / 2)
    with pytest.raises(ValueError, match="No episodes"):
        confidence_interval([])


class FixedGuess:
    """Stands in for a learner: always predicts class 0."""

    def __call__(self, inputs, training=False):
        return tf.one_hot(tf.zeros(tf.shape(inputs["query_x"])[:2], tf.int32), 4)


def test_evaluate_episodes_counts_each_episode(labelled_ids):
    sampler = EpisodeSampler(*labelled_ids, ways=4, shots=1, queries=3, seed=0)
    result = evaluate_episodes(FixedGuess(), sampler.dataset(batch_size=7, num_episodes=20), verbose=0)
    assert result.num_episodes == 20 and result.accuracy == pytest.approx(0.25)
    assert result.ci95 == pytest.approx(0.0)


def test_evaluate_episodes_weights_padding(labelled_ids):
    sampler = EpisodeSampler(*labelled_ids, ways=(2, 4), shots=1, queries=3, seed=0)
    result = evaluate_episodes(FixedGuess(), sampler.dataset(batch_size=8, num_episodes=16), verbose=0)
    ways = [int(b[0]["support_y"][t].numpy().max()) + 1 for b in sampler.dataset(8, 16) for t in range(len(b[1]))]
    np.testing.assert_allclose(result.per_episode, 1.0 / np.array(ways))


def test_infinite_episodes_rejected(labelled_ids):
    sampler = EpisodeSampler(*labelled_ids, ways=2, shots=1, queries=1)
    with pytest.raises(ValueError, match="infinite"):
        evaluate_episodes(FixedGuess(), sampler.dataset(batch_size=2))
