"""`TaskDistribution`: the base of every task source, turned into a `tf.data` pipeline.

A subclass describes how to draw *one* task from a seed (a stateless,
in-graph function); this base turns that into an infinite training stream or a
fixed, reproducible evaluation set, batched over tasks, parallel and
prefetched. Task ``i`` of a distribution with seed ``s`` is always the same
task, whatever the parallelism.

Example:

>>> sampler = EpisodeSampler(x, y, ways=5, shots=1, queries=15, seed=0)  # doctest: +SKIP
>>> train = sampler.dataset(batch_size=32)  # infinite stream  # doctest: +SKIP
>>> test = sampler.dataset(batch_size=20, num_episodes=600)  # fixed set  # doctest: +SKIP
"""

import numpy as np
import tensorflow as tf


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return int(value)


def _check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"`seed` must be an integer or None, got {seed!r}.")
    return int(seed)


class TaskDistribution:
    """Base class of task sources; subclasses implement `sample_task(seed)`.

    Args:
        seed: integer that makes the task stream reproducible. `None` draws
            one at random once, so a fixed evaluation set stays fixed for the
            lifetime of the object.
    """

    def __init__(self, seed=None):
        self.seed = int(np.random.SeedSequence().entropy % (2**31)) if seed is None else _check_seed(seed)

    def sample_task(self, seed):
        """Draws one task in graph mode from a `[2]` int64 stateless seed.

        Returns `(inputs, targets)` or `(inputs, targets, sample_weight)` with
        `inputs = {"support_x", "support_y", "query_x"}`, unbatched.
        """
        raise NotImplementedError

    def dataset(self, batch_size=1, num_episodes=None, seed=None):
        """A `tf.data.Dataset` of tasks batched `batch_size` at a time.

        Args:
            batch_size: tasks per batch (the leading `B` axis).
            num_episodes: `None` for an infinite stream (give `fit` a
                `steps_per_epoch`), or the size of a fixed, reproducible set
                (for `evaluate`/`predict`); the last batch may be smaller, no
                episode is dropped.
            seed: overrides the distribution's seed for this dataset.
        """
        batch_size = _check_positive_int("batch_size", batch_size)
        base_seed = self.seed if seed is None else _check_seed(seed)
        if num_episodes is None:
            indices = tf.data.Dataset.counter()
        else:
            indices = tf.data.Dataset.range(_check_positive_int("num_episodes", num_episodes))

        def draw(index):
            return self.sample_task(tf.stack([tf.constant(base_seed, tf.int64), index]))

        tasks = indices.map(draw, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return tasks.batch(batch_size, drop_remainder=num_episodes is None).prefetch(
            tf.data.AUTOTUNE
        )
