"""What the learners do differently while XLA compiles them (`compile(jit_compile=True)`).

XLA needs every shape at compile time. An episode's number of classes,
`max(support_y) + 1`, is a value of the labels: used as a shape (a one-hot
depth, a slice size), it would make TensorFlow compile a new program for
every distinct label tensor, that is for almost every episode. Under XLA the
learners use the support-set size `S` instead, a static upper bound on the
classes of an episode (labels `0..N-1`, each with at least one example, or
the padding label -1), and mask the classes beyond `N` as absent.

Example:

>>> import tensorflow as tf
>>> from keras_meta.ops import xla
>>> labels = tf.constant([[0, 1, 1, -1]])
>>> int(xla.episode_num_classes(labels))
2
>>> int(tf.function(xla.episode_num_classes, jit_compile=True)(labels))  # the static bound S
4
"""

import tensorflow as tf
from tensorflow.python.ops import control_flow_util


def in_xla_context():
    """True while TensorFlow traces a function that XLA compiles (`jit_compile=True`)."""
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def episode_num_classes(support_y, bound=None):
    """Classes of the episodes' logits: `max(support_y) + 1`, or under XLA the static support size `S`.

    `support_y` is `[..., S]` integer labels (-1 for padding). `bound`, if
    given, caps the XLA value (a learner with at most `bound` outputs).
    """
    if not in_xla_context():
        return tf.reduce_max(support_y) + 1
    size = support_y.shape[-1]
    if size is None:
        size = tf.shape(support_y)[-1]  # a compile-time constant for XLA
    if bound is None:
        return size
    return min(size, bound) if isinstance(size, int) else tf.minimum(size, bound)
