"""In-graph checks of episodes whose failures read as plain `ValueError`s.

`require(condition, template, values, checked)` returns `checked` when the
condition holds; otherwise, eagerly, it raises `ValueError` at once and, in a
graph (a `tf.data` map, a learner's step), it fails the step with the message
wrapped in markers that `error_message` finds again in TensorFlow's
`InvalidArgumentError`. `task_labels_checked` checks the labels of each task
a `TaskDistribution` draws; `integer_argument` checks the integer arguments of
every public function and class, eagerly, and `is_number` tells a real number
from anything else for the checks of the others.

Example:

>>> import tensorflow as tf
>>> from keras_meta.data import checks
>>> try:
...     checks.task_labels_checked(tf.constant([0, 2]), tf.constant([0, 1]))
... except ValueError as error:
...     print(str(error).split(":")[0])
The task's support labels are [0 2] and its query labels [0 1]
"""

import re

import numpy as np
import tensorflow as tf

_OPEN, _CLOSE = "<keras-meta>", "</keras-meta>"


def require(condition, template, values, checked):
    """`checked` (a tensor), computed only if `condition` holds; else `ValueError(template.format(*values()))`.

    `values` is a function returning the tensors the message shows. In a
    graph the check is an `Assert` that `checked` depends on.
    """
    if tf.executing_eagerly():
        if not bool(condition):
            raise ValueError(template.format(*[shown(np.asarray(v)) for v in values()]))
        return checked
    message = tf.strings.format(_OPEN + template + _CLOSE, values(), summarize=-1)
    with tf.control_dependencies([tf.debugging.Assert(condition, [message])]):
        return tf.identity(checked)


def is_number(value):
    """Whether `value` is a finite real number (a Python or NumPy int or float, not a bool).

    >>> from keras_meta.data.checks import is_number
    >>> is_number(0.5), is_number(True), is_number(float("nan")), is_number("1")
    (True, False, False, False)
    """
    return (not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, float, np.integer, np.floating))
            and bool(np.isfinite(value)))


def integer_argument(name, value, minimum=1, unit=""):
    """`value` as an `int`, checked before anything runs: an integer (not a bool) of at least `minimum`.

    The `ValueError` names the argument: "`ways` must be a positive integer,
    got 0." `unit` ends the description (" number of inner steps").
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        kind = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, f"an integer >= {minimum}")
        raise ValueError(f"`{name}` must be {kind}{unit}, got {value!r}.")
    return int(value)


def shown(value):
    """A value as the graph's checks print it: `3`, or `[0 1 7]`."""
    if value.ndim == 0:
        return str(value)
    return "[" + " ".join(str(v) for v in value.ravel()) + "]"


def error_message(error):
    """The message of a failed `require` inside `error` (a `tf.errors.InvalidArgumentError`), or `None`."""
    message = getattr(error, "message", str(error))
    found = re.search(re.escape(_OPEN) + "(.*?)" + re.escape(_CLOSE), message, re.S)
    if found is None:
        return None
    return found.group(1).replace("\\'", "'").replace('\\"', '"')  # the Assert prints an escaped string


def task_labels_checked(support_y, targets):
    """`targets`, checked with the task's integer support labels (float labels, regression, pass unchecked).

    The support labels of one task `[S]` must be `0..N-1` with every class
    present (-1 marks a padded slot), and integer query labels `[Q]` must be
    classes of the support set.
    """
    support_y = tf.convert_to_tensor(support_y)
    if not support_y.dtype.is_integer:
        return targets
    labels = tf.cast(support_y, tf.int32)
    ways = tf.reduce_max(labels) + 1
    present = tf.unique(tf.boolean_mask(labels, labels >= 0)).y
    valid = (ways >= 1) & (tf.reduce_min(labels) >= -1) & (tf.size(present) == ways)
    advice = ("an episode's support labels must be 0..N-1 with every class present (-1 marks a padded slot) "
              "and query labels classes of its support set. Remap each task's labels in `sample_task`.")
    targets = tf.convert_to_tensor(targets)
    if targets.dtype.is_integer and targets.shape.rank == support_y.shape.rank:
        query = tf.cast(targets, tf.int32)
        valid = valid & (tf.reduce_min(query) >= 0) & (tf.reduce_max(query) < ways)
        return require(valid, "The task's support labels are {} and its query labels {}: " + advice,
                       lambda: [tf.sort(labels), tf.sort(query)], targets)
    return require(valid, "The task's support labels are {}: " + advice, lambda: [tf.sort(labels)], targets)
