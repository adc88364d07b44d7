"""`tf.map_fn` that leaves TensorFlow as it found it when its function raises.

While tracing, `tf.map_fn` sets a caching device on the global variable scope and
clears it only when the function returns. An error raised inside it (a learner
refusing a malformed episode, say) leaves the caching device set, and from then
on the process cannot enter any `tf.distribute` strategy's scope ("Caching
devices is not yet supported when eager execution is enabled"). keras-meta maps
tasks and images with :func:`map_fn`, which puts the scope back before the error
goes on.

    >>> import tensorflow as tf
    >>> from keras_meta._map import map_fn
    >>> map_fn(lambda x: 2 * x, tf.constant([1, 2])).numpy().tolist()
    [2, 4]
"""

import tensorflow as tf


def map_fn(fn, elems, **kwargs):
    """`tf.map_fn(fn, elems, **kwargs)`; if it raises, the variable scope's caching device is restored first."""
    scope = tf.compat.v1.get_variable_scope()
    caching_device = scope.caching_device
    try:
        return tf.map_fn(fn, elems, **kwargs)
    except BaseException:
        scope.set_caching_device(caching_device)
        raise
