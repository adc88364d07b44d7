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

from keras_meta.data import checks
from keras_meta.data.episode_format import SUPPORT_Y


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

    # Each drawn task's integer labels are checked as an N-way episode's (`checks.task_labels_checked`). A
    # subclass whose labels are ids of a label space shared by all tasks (items, say), or valid by
    # construction, turns the check off.
    check_drawn_labels = True

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
            batch_size: tasks per batch (the leading `B` axis); under a
                `tf.distribute` strategy, the global batch, split over replicas.
            num_episodes: `None` for an infinite stream (give `fit` a
                `steps_per_epoch`), or the size of a fixed, reproducible set
                (for `evaluate`/`predict`); the last batch may be smaller, no
                episode is dropped.
            seed: overrides the distribution's seed for this dataset.

        An infinite stream carries an `EpisodeStream` (`dataset.episode_stream`)
        with which a learner's `fit` gives each replica and worker its own
        tasks and resumes where a restored run stopped.
        """
        batch_size = checks.integer_argument("batch_size", batch_size)
        base_seed = self.seed if seed is None else _check_seed(seed)
        if num_episodes is None:
            stream = EpisodeStream(self, batch_size, base_seed)
            dataset = stream.dataset()
            dataset.episode_stream = stream
            return dataset
        indices = tf.data.Dataset.range(checks.integer_argument("num_episodes", num_episodes))
        tasks = indices.map(self.task_drawer(base_seed), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return tasks.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    def task_drawer(self, seed):
        """`index -> task`: task `index` of the stream with this seed, its labels checked (`checks`)."""

        def draw(index):
            task = self.sample_task(tf.stack([tf.constant(seed, tf.int64), index]))
            if not self.check_drawn_labels:
                return task
            inputs, targets, *weights = task
            return (inputs, checks.task_labels_checked(inputs[SUPPORT_Y], targets), *weights)

        return draw


class EpisodeStream:
    """The infinite task stream of `TaskDistribution.dataset`, addressable by batch, replica and worker.

    Global batch `b` holds tasks `b * B ... b * B + B - 1` (`B` the batch
    size). Started at batch `start`, the stream continues exactly where a run
    that consumed `start` batches stopped. Split over `num_pipelines` input
    pipelines (one per worker), pipeline `i` draws only its own share of each
    global batch, tasks `b * B + i * B / P ...`, so no task is drawn twice or
    drawn and discarded, and the global batch is the one a single device sees.

    Example:

    >>> from keras_meta.datasets.sine import SinusoidTasks
    >>> stream = SinusoidTasks(shots=2, queries=2, seed=0).dataset(batch_size=4).episode_stream
    >>> later = stream.dataset(start=3)  # from the 4th batch on: tasks 12, 13, ...
    >>> halves = [stream.dataset(pipeline=i, num_pipelines=2) for i in (0, 1)]  # tasks 0, 1 | 2, 3 of batch 0
    """

    def __init__(self, distribution, batch_size, seed):
        self.distribution = distribution
        self.batch_size = batch_size
        self.seed = seed

    def dataset(self, start=0, pipeline=0, num_pipelines=1, per_replica_batch_size=None):
        """This pipeline's part of the stream from global batch `start`, batched per replica."""
        start = checks.integer_argument("start", start, minimum=0)
        num_pipelines = checks.integer_argument("num_pipelines", num_pipelines)
        if isinstance(pipeline, bool) or not isinstance(pipeline, (int, np.integer)) \
                or not 0 <= pipeline < num_pipelines:
            raise ValueError(f"`pipeline` must be an integer in 0..{num_pipelines - 1}, got {pipeline!r}.")
        if self.batch_size % num_pipelines:
            raise ValueError(
                f"A batch of {self.batch_size} tasks cannot be split evenly over {num_pipelines} workers; "
                "use a batch size that is a multiple of the number of replicas."
            )
        share = self.batch_size // num_pipelines
        per_replica = share if per_replica_batch_size is None else checks.integer_argument(
            "per_replica_batch_size", per_replica_batch_size)
        if share % per_replica:
            raise ValueError(f"A worker's {share} tasks per batch cannot be split into batches of {per_replica}.")
        first = start * self.batch_size + pipeline * share

        def index(i):
            return first + (i // share) * self.batch_size + i % share

        draw = self.distribution.task_drawer(self.seed)
        tasks = tf.data.Dataset.counter().map(lambda i: draw(index(i)), num_parallel_calls=tf.data.AUTOTUNE,
                                              deterministic=True)
        return tasks.batch(per_replica, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

    def distribute(self, strategy, start=0):
        """The stream from batch `start` for `strategy`: a plain dataset on one replica, else one per worker."""
        replicas = strategy.num_replicas_in_sync
        if replicas == 1:
            return self.dataset(start)
        if self.batch_size % replicas:
            raise ValueError(
                f"The episode batch size ({self.batch_size} tasks) must be a multiple of the {replicas} replicas "
                f"of {type(strategy).__name__}: each replica takes an equal share of every batch."
            )

        def worker_dataset(context):
            return self.dataset(start, context.input_pipeline_id, context.num_input_pipelines,
                                context.get_per_replica_batch_size(self.batch_size))

        return strategy.distribute_datasets_from_function(worker_dataset)

