"""`EpisodeSampler`: N-way K-shot episodes from any labelled examples, as `tf.data`.

Every learner consumes one episode format, batched over tasks::

    inputs = {"support_x": [B, N*K, ...], "support_y": [B, N*K] int32,
              "query_x":   [B, N*Q, ...]}
    query_labels: [B, N*Q] int32

Labels are remapped to `0..N-1` inside each task, the classes of a task come in
random order, and support and query positions are shuffled. Support and query
examples of a task never overlap.

Variable-way / variable-shot episodes (Meta-Dataset style) are padded to the
largest size: pass `ways=(min, max)` and/or `shots=(min, max)`. A padded
support slot has `support_y == -1`; a padded query slot (a class absent from a
task with fewer ways) has label 0 and sample weight 0, so an episode is then
`(inputs, query_labels, sample_weight)` and Keras losses and metrics skip the
padding.

Example:

>>> import numpy as np
>>> from keras_meta.data import EpisodeSampler
>>> x = np.random.rand(200, 8, 8, 1).astype("float32")
>>> y = np.repeat(np.arange(10), 20)
>>> sampler = EpisodeSampler(x, y, ways=5, shots=1, queries=3, seed=0)
>>> inputs, labels = next(iter(sampler.dataset(batch_size=4)))
>>> inputs["support_x"].shape, labels.shape
(TensorShape([4, 5, 8, 8, 1]), TensorShape([4, 15]))
"""

import numpy as np
import tensorflow as tf

from keras_meta._map import map_fn
from keras_meta.data import sources
from keras_meta.data.checks import integer_argument
from keras_meta.data.episode_format import PADDING_LABEL, QUERY_X, SUPPORT_X, SUPPORT_Y
from keras_meta.data.tasks import TaskDistribution

_ROTATIONS = (0, 90, 180, 270)


def _size_range(name, value):
    """`(low, high)` from an int or a `(low, high)` pair of positive ints."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"`{name}` must be an int or a (min, max) pair, got {value!r}.")
        low, high = (integer_argument(name, v) for v in value)
        if low > high:
            raise ValueError(f"`{name}`=({low}, {high}): min must not exceed max.")
        return low, high
    value = integer_argument(name, value)
    return value, value


class EpisodeSampler(TaskDistribution):
    """Draws N-way K-shot tasks with Q queries per class from in-memory examples.

    Args:
        x: array `[num_examples, ...]` of inputs (any dtype; kept as given).
        y: integer class labels `[num_examples]`.
        ways: classes per task, an int or a `(min, max)` range drawn per task.
        shots: support examples per class, an int or a `(min, max)` range
            drawn per class.
        queries: query examples per class.
        classes: the label values an episode may draw from (a class split);
            default all.
        rotations: class-level augmentation: each of these rotations (degrees
            out of 0, 90, 180, 270) of a class is a class of its own, as for
            Omniglot. Needs square images `[H, H]` or `[H, H, C]`.
        flips: class-level augmentation: the mirror image (left-right flip)
            of a class, and of each of its rotations, is a class of its own;
            doubles the classes. Needs images `[H, W]` or `[H, W, C]`.
        seed: makes the episode stream reproducible (see `TaskDistribution`).
        decode: for data that does not fit in memory decoded: `x` is then a
            1-D array of encoded examples (image file paths, or the encoded
            bytes of each image) and `decode(one_string_tensor)` turns one
            into its input tensor, of the same shape for every example (resize
            there). Only the drawn examples are decoded, inside the `tf.data`
            pipeline. `keras_meta.data.image_decoder` makes one.
    """

    check_drawn_labels = False  # support labels come from tf.range, queries from the same classes

    def __init__(
        self, x, y, ways, shots, queries, classes=None, rotations=None, flips=False, seed=None, decode=None
    ):
        super().__init__(seed)
        if decode is not None:
            x = self._encoded_examples(x)
        x, y = sources.check_examples(x, y)
        self.min_ways, self.max_ways = _size_range("ways", ways)
        self.min_shots, self.max_shots = _size_range("shots", shots)
        self.queries = integer_argument("queries", queries)
        self._decode, example = self._check_decode(decode, x)
        shape = (len(x),) + tuple(example.shape) if decode is not None else x.shape
        self.rotations = self._check_rotations(rotations, shape)
        self.flips = self._check_flips(flips, shape)
        self.classes = self._select_classes(y, classes)

        kept = np.flatnonzero(np.isin(y, self.classes))
        kept = kept[np.argsort(y[kept], kind="stable")]
        x, y = x[kept], y[kept]  # one copy, in class order
        _, offsets, counts = np.unique(y, return_index=True, return_counts=True)
        self._check_counts(counts)
        self._num_transforms = len(self.rotations) * (2 if self.flips else 1)
        num_classes = len(self.classes) * self._num_transforms
        if self.max_ways > num_classes:
            raise ValueError(
                f"ways={self.max_ways} but only {num_classes} classes are available "
                f"({len(self.classes)} classes x {len(self.rotations)} rotations"
                f"{', each also mirrored' if self.flips else ''}); lower `ways` or allow more `classes`."
            )
        self.num_classes = num_classes
        self._x = tf.constant(x)
        self._offsets = tf.constant(offsets, tf.int64)
        self._counts = tf.constant(counts, tf.int64)
        self._max_count = int(counts.max())
        self._pixel_orders = self._transform_orders(shape) if self.rotations != (0,) or self.flips else None
        self._example_spec = None if example is None else tf.TensorSpec(example.shape, example.dtype)

    @classmethod
    def from_dataset(cls, dataset, ways, shots, queries, max_examples=1_000_000, **kwargs):
        """Builds a sampler from a `tf.data.Dataset` of `(x, y)` pairs.

        Any TFDS dataset loaded with `as_supervised=True` works; the examples
        are read into memory once. A dataset of unknown size (after
        `.filter()`, say) may hold at most `max_examples` examples: more
        raise, as it may be infinite (make it finite with `.take(n)`).
        """
        x, y = sources.arrays_from_dataset(dataset, max_examples=max_examples)
        return cls(x, y, ways, shots, queries, **kwargs)

    @classmethod
    def from_directory(cls, path, ways, shots, queries, image_size=(28, 28), color_mode="grayscale", **kwargs):
        """Builds a sampler from a folder or `.zip` of class sub-folders of images.

        Every folder that holds images is a class. `sampler.class_names[label]`
        gives the folder of each label.
        """
        x, y, class_names = sources.load_image_folder(path, image_size, color_mode)
        sampler = cls(x, y, ways, shots, queries, **kwargs)
        sampler.class_names = class_names
        return sampler

    @property
    def variable(self):
        """True when ways or shots vary between episodes (padded episodes)."""
        return self.min_ways != self.max_ways or self.min_shots != self.max_shots

    def sample_task(self, seed):
        n_max, k_max, q = self.max_ways, self.max_shots, self.queries
        seeds = tf.random.experimental.stateless_split(seed, num=6)
        num_transforms = self._num_transforms
        # Classes of this task, in random order: position j gets label j.
        class_keys = tf.random.stateless_uniform([self.num_classes], seeds[0])
        chosen = tf.argsort(class_keys)[:n_max]
        base = tf.cast(chosen // num_transforms, tf.int64)
        # A random permutation of each chosen class' examples, valid ones first.
        counts = tf.gather(self._counts, base)
        ranks = tf.random.stateless_uniform([n_max, self._max_count], seeds[1])
        invalid = tf.range(self._max_count, dtype=tf.int64)[None, :] >= counts[:, None]
        picks = tf.argsort(ranks + tf.cast(invalid, tf.float32), axis=1)[:, : k_max + q]
        indices = tf.gather(self._offsets, base)[:, None] + tf.cast(picks, tf.int64)
        images = tf.gather(self._x, tf.reshape(indices, [-1]))
        if self._decode is not None:
            spec = self._example_spec
            images = map_fn(
                lambda encoded: tf.ensure_shape(self._decode(encoded), spec.shape), images, fn_output_signature=spec
            )
        if self._pixel_orders is not None:
            transform = tf.repeat(chosen % num_transforms, k_max + q)
            images = self._transform(images, transform)
        images = tf.reshape(images, tf.concat([[n_max, k_max + q], tf.shape(images)[1:]], 0))

        labels = tf.range(n_max, dtype=tf.int32)
        ways = tf.random.stateless_uniform([], seeds[2], self.min_ways, self.max_ways + 1, tf.int32)
        shots = tf.random.stateless_uniform([n_max], seeds[3], self.min_shots, self.max_shots + 1, tf.int32)
        active = labels < ways
        support_slot = (tf.range(k_max)[None, :] < shots[:, None]) & active[:, None]
        support_y = tf.where(support_slot, labels[:, None], PADDING_LABEL)
        query_y = tf.broadcast_to(tf.where(active, labels, 0)[:, None], [n_max, q])
        query_w = tf.broadcast_to(tf.cast(active, tf.float32)[:, None], [n_max, q])

        def shuffled(values, length, shuffle_seed):
            order = tf.argsort(tf.random.stateless_uniform([length], shuffle_seed))
            return [tf.gather(tf.reshape(v, tf.concat([[length], tf.shape(v)[2:]], 0)), order) for v in values]

        support_x, support_y = shuffled([images[:, :k_max], support_y], n_max * k_max, seeds[4])
        query_x, query_y, query_w = shuffled([images[:, k_max:], query_y, query_w], n_max * q, seeds[5])
        inputs = {SUPPORT_X: support_x, SUPPORT_Y: support_y, QUERY_X: query_x}
        if self.variable:
            return inputs, query_y, query_w
        return inputs, query_y

    # -- validation and set-up ------------------------------------------------

    def _select_classes(self, y, classes):
        present = np.unique(y)
        if classes is None:
            return present
        classes = np.unique(np.asarray(classes))
        if classes.size == 0:
            raise ValueError("`classes` is empty: name at least the `ways` classes to draw from.")
        missing = np.setdiff1d(classes, present)
        if missing.size:
            raise ValueError(
                f"`classes` names labels that no example has: {missing[:10].tolist()}"
                f"{' ...' if missing.size > 10 else ''}. Use labels present in `y`."
            )
        return classes

    def _check_counts(self, counts):
        needed = self.max_shots + self.queries
        short = np.flatnonzero(counts < needed)
        if short.size:
            names = self.classes[short][:10].tolist()
            raise ValueError(
                f"shots + queries = {self.max_shots} + {self.queries} = {needed} examples per class "
                f"are needed, but {short.size} class(es) have fewer (labels {names}"
                f"{' ...' if short.size > 10 else ''}; smallest has {counts.min()}). Lower "
                "`shots`/`queries`, or leave those classes out with `classes=`."
            )

    @staticmethod
    def _encoded_examples(x):
        """Encoded examples as an object array: NumPy's fixed-width bytes would drop trailing zero bytes."""
        if isinstance(x, np.ndarray) and x.dtype.kind == "S":
            raise ValueError(
                f"Encoded examples as a fixed-width bytes array (dtype {x.dtype}) have lost any trailing zero "
                "bytes. Keep them in an object array, `np.array(list_of_bytes, dtype=object)`, or pass the Python list."
            )
        if isinstance(x, (list, tuple)):
            encoded = np.empty(len(x), dtype=object)
            encoded[:] = x
            return encoded
        return x

    @staticmethod
    def _check_decode(decode, x):
        """`(decode, first decoded example)`, or `(None, None)` for in-memory examples."""
        if decode is None:
            return None, None
        if not callable(decode):
            raise ValueError(f"`decode` must be a function from one encoded example to a tensor, got {decode!r}.")
        if x.ndim != 1 or x.dtype.kind not in "SUO":
            raise ValueError(
                "With `decode`, `x` must be a 1-D array of encoded examples (file paths or image bytes), got "
                f"an array of shape {x.shape} and dtype {x.dtype}. Pass decoded arrays without `decode`."
            )
        try:
            example = tf.convert_to_tensor(decode(tf.constant(x[0])))
        except Exception as error:
            raise ValueError(f"`decode` failed on the first example {x[0]!r:.80}: {error}") from error
        traced = tf.function(decode).get_concrete_function(tf.TensorSpec([], tf.string)).structured_outputs
        if not traced.shape.is_fully_defined():
            raise ValueError(
                f"`decode` must return examples of one fixed shape (resize them there); traced, it gives "
                f"{traced.shape}. Resize with `tf.image.resize` or use `image_decoder(image_size)`."
            )
        return decode, example

    @staticmethod
    def _check_rotations(rotations, shape):
        if rotations is None:
            return (0,)
        rotations = tuple(int(r) for r in rotations)
        if not rotations or any(r not in _ROTATIONS for r in rotations) or len(set(rotations)) != len(rotations):
            raise ValueError(f"`rotations` must be distinct values out of {_ROTATIONS}, got {rotations}.")
        if rotations != (0,) and (len(shape) not in (3, 4) or shape[1] != shape[2]):
            raise ValueError(
                f"`rotations` need square images [N, H, H] or [N, H, H, C]; got examples of shape {shape}."
            )
        return rotations

    @staticmethod
    def _check_flips(flips, shape):
        if not isinstance(flips, (bool, np.bool_)):
            raise ValueError(f"`flips` must be True or False, got {flips!r}.")
        if flips and len(shape) not in (3, 4):
            raise ValueError(f"`flips` need images [N, H, W] or [N, H, W, C]; got examples of shape {shape}.")
        return bool(flips)

    def _transform_orders(self, shape):
        """For each class transform (rotations, then their mirror images), the order of the flattened pixels."""
        grid = np.arange(shape[1] * shape[2]).reshape(shape[1], shape[2])
        orders = [np.rot90(grid, r // 90) for r in self.rotations]
        if self.flips:
            orders += [order[:, ::-1] for order in orders]
        return tf.constant(np.stack([order.reshape(-1) for order in orders]), tf.int32)

    def _transform(self, images, transform):
        shape = tf.shape(images)
        flat = tf.reshape(images, [shape[0], -1, tf.reduce_prod(shape[3:])])
        transformed = tf.gather(flat, tf.gather(self._pixel_orders, transform), batch_dims=1)
        return tf.reshape(transformed, shape)
