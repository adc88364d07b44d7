import numpy as np
import pytest
import tensorflow as tf

from keras_meta.data import EpisodeSampler
from keras_meta.evaluation import confidence_interval, evaluate_episodes, evaluate_few_shot


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


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(ways=0), r"`ways` must be a positive integer, got 0"),
        (dict(ways=-5), r"`ways` must be a positive integer, got -5"),
        (dict(ways=2.0), r"`ways` must be a positive integer, got 2.0"),
        (dict(ways=4, shots=0), r"`shots` must be a positive integer, got 0"),
        (dict(ways=4, queries=0), r"`queries` must be a positive integer, got 0"),
        (dict(ways=4, num_episodes=0), r"`num_episodes` must be a positive integer, got 0"),
        (dict(ways=4, batch_size=0), r"`batch_size` must be a positive integer, got 0"),
        (dict(ways=4, batch_size=2.5), r"`batch_size` must be a positive integer, got 2.5"),
        (dict(ways=4, seed="0"), r"`seed` must be an integer"),
        (dict(ways=13, queries=1), r"ways=13 but only 12 classes"),
        (dict(ways=4, shots=5, queries=6), r"shots \+ queries = 5 \+ 6 = 11 examples per class"),
    ],
)
def test_evaluate_few_shot_bad_arguments_raise(labelled_ids, kwargs, message):
    with pytest.raises(ValueError, match=message):
        evaluate_few_shot(FixedGuess(), *labelled_ids, verbose=0, **kwargs)


def test_evaluate_few_shot_variable_ways(labelled_ids):
    result = evaluate_few_shot(FixedGuess(), *labelled_ids, ways=(2, 4), shots=1, queries=3, num_episodes=8,
                               verbose=0)
    assert result.num_episodes == 8
    assert evaluate_few_shot(FixedGuess(), *labelled_ids, ways=4, num_episodes=2, queries=3, seed=None,
                             verbose=0).num_episodes == 2


def test_evaluate_episodes_bad_episodes_raise(labelled_ids):
    sampler = EpisodeSampler(*labelled_ids, ways=4, shots=1, queries=3, seed=0)
    with pytest.raises(ValueError, match="must be a finite `tf.data.Dataset`"):
        evaluate_episodes(FixedGuess(), list(sampler.dataset(batch_size=2, num_episodes=2)), verbose=0)
    pairs = tf.data.Dataset.from_tensor_slices((np.zeros((4, 3), "float32"), np.arange(4))).batch(2)
    with pytest.raises(ValueError, match=r"must yield `\(inputs, labels\)`"):
        evaluate_episodes(FixedGuess(), pairs, verbose=0)


class Embedder:
    """Stands in for a learner that returns query embeddings, not logits."""

    def __call__(self, inputs, training=False):
        return tf.reshape(inputs["query_x"], tf.concat([tf.shape(inputs["query_x"])[:2], [-1]], 0))[..., 0]


def test_evaluate_episodes_rejects_outputs_that_are_not_logits(labelled_ids):
    sampler = EpisodeSampler(*labelled_ids, ways=4, shots=1, queries=3, seed=0)
    with pytest.raises(ValueError, match=r"query logits \[batch, queries, ways\] = \[2, 12\] \+ \[ways\], got shape "
                                         r"\[2, 12\]"):
        evaluate_episodes(Embedder(), sampler.dataset(batch_size=2, num_episodes=2), verbose=0)


def test_changing_eval_inner_steps_between_evaluations_takes_effect():
    """The traced evaluation is kept per learner; a new `eval_inner_steps` must not reuse the old trace."""
    import keras

    from keras_meta.learners import MAML

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 4)).astype("float32"), np.repeat(np.arange(6), 10)
    learner = MAML(keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]), inner_learning_rate=2.0)
    learner.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    scores = {}
    for steps in (0, 5, 0):
        learner.eval_inner_steps = steps
        scores.setdefault(steps, []).append(evaluate_few_shot(learner, x, y, ways=3, shots=2, queries=3,
                                                              num_episodes=20, verbose=0).accuracy)
    assert scores[0][0] == scores[0][1]
    assert scores[5][0] != scores[0][0]  # adapting changes the answers
    fresh = MAML.from_config(learner.get_config())
    fresh.set_weights(learner.get_weights())
    fresh.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    fresh.eval_inner_steps = 5
    again = evaluate_few_shot(fresh, x, y, ways=3, shots=2, queries=3, num_episodes=20, verbose=0)
    assert again.accuracy == scores[5][0]


def test_evaluate_few_shot_decodes_encoded_examples_to_the_same_score():
    from keras_meta.data.sources import image_decoder

    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (60, 5, 5, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(6), 10)
    encoded = np.array([tf.io.encode_png(image).numpy() for image in images], dtype=object)

    class MeanColourMatcher:
        """Nearest class by mean pixel value: a deterministic stand-in for a learner."""

        def __call__(self, inputs, training=False):
            support = tf.reduce_mean(tf.cast(inputs["support_x"], tf.float32), [2, 3, 4])
            query = tf.reduce_mean(tf.cast(inputs["query_x"], tf.float32), [2, 3, 4])
            return -tf.abs(query[:, :, None] - support[:, None, :])

    arrays = evaluate_few_shot(MeanColourMatcher(), images, labels, ways=4, shots=1, queries=3, num_episodes=12,
                               verbose=0)
    lazy = evaluate_few_shot(MeanColourMatcher(), encoded, labels, ways=4, shots=1, queries=3, num_episodes=12,
                             verbose=0, decode=image_decoder(5, dtype="uint8"))
    np.testing.assert_allclose(lazy.per_episode, arrays.per_episode)
    assert 0.25 < arrays.accuracy < 1.0  # neither chance nor perfect: the episodes differ


def test_evaluate_few_shot_makes_rotations_classes_of_their_own():
    from keras_meta.evaluation import few_shot_episodes

    x = np.zeros((6, 4, 4, 1), np.float32)
    x[:, 0, :] = 1.0  # a bar along the top edge: each rotation puts it on another edge
    y = np.zeros(6, np.int64)  # one class
    with pytest.raises(ValueError, match="only 1 classes are available"):
        few_shot_episodes(x, y, ways=4, shots=1, queries=1, num_episodes=2)
    episodes = few_shot_episodes(x, y, ways=4, shots=1, queries=1, num_episodes=2, rotations=(0, 90, 180, 270))
    inputs, labels = next(iter(episodes))
    images = inputs["support_x"][0].numpy()[..., 0]
    edges = {(image[0].sum(), image[-1].sum(), image[:, 0].sum(), image[:, -1].sum()) for image in images}
    assert len(edges) == 4  # the four support classes are the four rotations
