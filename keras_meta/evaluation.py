"""Few-shot evaluation: mean accuracy and its 95% confidence interval over episodes.

Example:

>>> from keras_meta.evaluation import evaluate_episodes
>>> result = evaluate_episodes(learner, sampler.dataset(batch_size=50, num_episodes=600))  # doctest: +SKIP
>>> print(f"{result.accuracy:.2%} +- {result.ci95:.2%}")  # doctest: +SKIP
"""

import collections
import weakref

import keras
import numpy as np
import tensorflow as tf

from keras_meta.data import EpisodeSampler
from keras_meta.data.checks import integer_argument
from keras_meta.data.episodes import _size_range
from keras_meta.data.tasks import _check_seed

EpisodeAccuracy = collections.namedtuple("EpisodeAccuracy", ["accuracy", "ci95", "num_episodes", "per_episode"])
"""The mean query accuracy, the half-width of its 95% interval, the number of episodes and their accuracies."""


def confidence_interval(per_episode):
    """`(mean, half-width of the 95% normal confidence interval)` of per-episode scores."""
    scores = np.asarray(per_episode, dtype=np.float64)
    if scores.size == 0:
        raise ValueError("No episodes to summarise: give at least one.")
    if scores.size == 1:
        return float(scores[0]), float("nan")
    return float(scores.mean()), float(1.96 * scores.std(ddof=1) / np.sqrt(scores.size))


def evaluate_episodes(learner, episodes, verbose=1):
    """Per-episode query accuracy of `learner` over a finite episode dataset.

    Args:
        learner: a learner whose outputs are query logits `[B, N*Q, N]`.
        episodes: a finite dataset of `(inputs, labels)` or
            `(inputs, labels, sample_weight)` batches, such as
            `sampler.dataset(batch_size=50, num_episodes=600)`.
        verbose: 1 shows a progress bar.

    Returns:
        `EpisodeAccuracy(accuracy, ci95, num_episodes, per_episode)`.
    """
    if not isinstance(episodes, tf.data.Dataset):
        raise ValueError(
            f"`episodes` must be a finite `tf.data.Dataset` of episode batches, got {type(episodes).__name__}; "
            "e.g. `sampler.dataset(batch_size=50, num_episodes=600)`."
        )
    spec = episodes.element_spec
    if not isinstance(spec, tuple) or len(spec) not in (2, 3) or not isinstance(spec[0], dict):
        raise ValueError(
            "`episodes` must yield `(inputs, labels)` or `(inputs, labels, sample_weight)` batches with "
            f"`inputs` a dict of support_x, support_y and query_x, as `sampler.dataset(...)`; it yields {spec}."
        )
    cardinality = int(episodes.cardinality())
    if cardinality < 0:
        raise ValueError(
            "`episodes` is infinite (or of unknown size); evaluate on a fixed set such as "
            "`sampler.dataset(batch_size=50, num_episodes=600)`."
        )
    progress = keras.utils.Progbar(cardinality, unit_name="batch") if verbose else None
    predict = episode_predictor(learner)
    per_episode = []
    for step, batch in enumerate(episodes):
        inputs, labels = batch[0], batch[1].numpy()
        weights = (batch[2].numpy() if len(batch) > 2 else np.ones(labels.shape)).astype(np.float64)  # exact ties
        logits = np.asarray(predict(inputs))
        if logits.ndim != 3 or logits.shape[:2] != labels.shape:
            raise ValueError(
                f"The learner's outputs must be query logits [batch, queries, ways] = {list(labels.shape)} + "
                f"[ways], got shape {list(logits.shape)}."
            )
        correct = (np.argmax(logits, axis=-1) == labels) * weights
        per_episode.extend(correct.sum(axis=1) / weights.sum(axis=1))
        if progress:
            progress.update(step + 1)
    accuracy, ci95 = confidence_interval(per_episode)
    return EpisodeAccuracy(accuracy, ci95, len(per_episode), np.asarray(per_episode))


_PREDICTORS = weakref.WeakKeyDictionary()


def episode_predictor(learner):
    """`learner`'s inference on a whole episode batch as one traced call, kept for later evaluations.

    It runs outside any replica: under a `tf.distribute` strategy each episode
    is predicted, and counted, exactly once. A learner's `eval_inner_steps`
    is part of the traced call: changing it traces a new one.
    """
    settings = getattr(learner, "eval_inner_steps", None)
    try:
        cached_settings, predictor = _PREDICTORS[learner]
        if cached_settings == settings:
            return predictor
    except KeyError:
        pass
    except TypeError:  # an object that cannot be a weak key: no caching
        return tf.function(lambda inputs: learner(inputs, training=False), reduce_retracing=True)
    reference = weakref.ref(learner)  # the cache must not keep the learner alive
    predictor = tf.function(lambda inputs: reference()(inputs, training=False), reduce_retracing=True)
    _PREDICTORS[learner] = settings, predictor
    return predictor


def evaluate_few_shot(learner, x, y, ways, shots=1, queries=15, num_episodes=600, seed=0, batch_size=None,
                      verbose=1, rotations=None, decode=None):
    """Accuracy over a fixed set of `num_episodes` N-way K-shot episodes of `(x, y)`.

    A shortcut for `evaluate_episodes(learner, few_shot_episodes(x, y, ...))`.
    `rotations` makes each rotation of a class a class of its own (Omniglot's
    published protocol); with `decode`, `x` holds encoded examples (both as in
    `EpisodeSampler`).
    """
    episodes = few_shot_episodes(x, y, ways, shots, queries, num_episodes, seed, batch_size, rotations, decode)
    return evaluate_episodes(learner, episodes, verbose)


def few_shot_episodes(x, y, ways, shots=1, queries=15, num_episodes=600, seed=0, batch_size=None, rotations=None,
                      decode=None):
    """The fixed episode set of `evaluate_few_shot`; `batch_size=None` batches about 1024 examples at a time."""
    max_ways, max_shots = _size_range("ways", ways)[1], _size_range("shots", shots)[1]
    queries = integer_argument("queries", queries)
    num_episodes = integer_argument("num_episodes", num_episodes)
    seed = None if seed is None else _check_seed(seed)
    if batch_size is None:
        batch_size = max(1, 1024 // (max_ways * (max_shots + queries)))
    batch_size = integer_argument("batch_size", batch_size)
    sampler = EpisodeSampler(x, y, ways=ways, shots=shots, queries=queries, seed=seed, rotations=rotations,
                             decode=decode)
    return sampler.dataset(batch_size=batch_size, num_episodes=num_episodes)
