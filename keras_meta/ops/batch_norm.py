"""Batch normalisation that meta-gradients can go through, exactly and fast.

Keras' `BatchNormalization` computes its batch variance with `tf.nn.moments`,
which stops the gradient through the batch mean: exact for first-order
gradients, silently wrong for second-order ones (MAML's meta-gradient
through the inner loop). Two contexts change the layer for the calls (and
the graph tracing) made in them:

* `exact_batch_norm_moments()`: the variance becomes `mean((x - mean)^2)`,
  built from elementwise ops only (so it also converts to TFLite builtins);
* `fused_batch_norm()`: training-mode batch normalisation runs as
  TensorFlow's fused op, whose backward op TensorFlow differentiates
  exactly; one op forward and one backward instead of the dozens of
  elementwise ops that differentiating the unfused formula twice gives.

Values are Keras' own (up to float rounding); only gradients differ. A
context applies to the thread that enters it: meanwhile, other threads'
BatchNormalization layers run Keras' own code.

Example:

>>> import keras, numpy as np, tensorflow as tf
>>> from keras_meta import ops
>>> model = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization()])
>>> x = np.arange(8, dtype="float32").reshape(2, 4)
>>> with ops.fused_batch_norm():
...     fused = model(x, training=True)
>>> bool(np.allclose(fused, model(x, training=True), atol=1e-5))
True
"""

import contextlib
import functools
import threading

import keras
import tensorflow as tf
from keras import ops as kops

_BATCH_NORM = keras.layers.BatchNormalization
_KERAS_MOMENTS, _KERAS_CALL = _BATCH_NORM._moments, _BATCH_NORM.call
_patch_lock = threading.Lock()
_patch_depth = {"_moments": 0, "call": 0}
_inside = threading.local()  # per thread: how deep this thread is in each context (`_moments`, `call`)
_across_replicas = threading.local()  # per thread: MirroredStrategy traces each replica in a thread of its own


def _in_context(name):
    """True in a thread inside the context that patches `BatchNormalization.<name>`."""
    return getattr(_inside, name, 0) > 0


def _synchronizing():
    """True inside `fused_batch_norm(across_replicas=True)` in a replica context with several replicas."""
    if not getattr(_across_replicas, "on", False):
        return False
    context = tf.distribute.get_replica_context()
    return context is not None and context.num_replicas_in_sync > 1


def _exact_moments(layer, inputs, mask):
    if not _in_context("_moments"):  # another thread's layer, called while this one is inside the context
        return _KERAS_MOMENTS(layer, inputs, mask)
    if mask is None and _synchronizing():
        return kops.moments(inputs, layer._reduction_axes, synchronized=True)  # the global batch's moments
    if mask is not None or layer.synchronized:
        return _KERAS_MOMENTS(layer, inputs, mask)
    axes = layer._reduction_axes
    mean = kops.mean(inputs, axis=axes, keepdims=True)
    variance = kops.mean(kops.square(inputs - mean), axis=axes)
    return kops.squeeze(mean, axis=axes), variance


def _fused_call(layer, inputs, training=None, mask=None):
    """Training-mode batch normalisation as one `FusedBatchNormV3` op, where that op applies.

    Its gradient is the fused `FusedBatchNormGradV3` op, and TensorFlow
    differentiates that one exactly (the second-order terms MAML needs).
    Anything else (eager execution, inference, masks, synchronized or
    renormalised batch statistics, channels-first axes, float16/float64)
    goes to Keras' own call.
    """
    if not _in_context("call"):  # another thread's layer, called while this one is inside the context
        return _KERAS_CALL(layer, inputs, training=training, mask=mask)
    inputs = tf.convert_to_tensor(inputs)
    rank = inputs.shape.rank
    if (tf.executing_eagerly()  # graphs only: that is where the meta-gradients were checked
            or _synchronizing()  # statistics of the global batch: Keras' call with synchronized moments
            or not (training and layer.trainable) or mask is not None or layer.synchronized or layer.renorm
            or inputs.dtype != tf.float32 or layer.compute_dtype != "float32" or rank is None or rank < 2
            or layer.axis not in (-1, rank - 1) or layer.epsilon < 1.001e-5):  # the op's smallest epsilon
        return _KERAS_CALL(layer, inputs, training=training, mask=mask)
    channels = inputs.shape[-1]
    images = inputs if rank == 4 else tf.reshape(inputs, [-1, 1, 1, channels])
    gamma = tf.convert_to_tensor(layer.gamma) if layer.scale else tf.ones([channels])
    beta = tf.convert_to_tensor(layer.beta) if layer.center else tf.zeros([channels])
    empty = tf.constant([], tf.float32)  # no running statistics: training mode
    outputs, mean, unbiased_variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
        x=images, scale=gamma, offset=beta, mean=empty, variance=empty, epsilon=layer.epsilon,
        exponential_avg_factor=1.0, data_format="NHWC", is_training=True)
    count = tf.cast(tf.size(images) // channels, tf.float32)
    variance = unbiased_variance * (count - 1.0) / count  # Keras' biased variance (the op gives 0 for one example)
    layer.moving_mean.assign(layer.moving_mean * layer.momentum + mean * (1.0 - layer.momentum))
    layer.moving_variance.assign(layer.moving_variance * layer.momentum + variance * (1.0 - layer.momentum))
    return outputs if rank == 4 else tf.reshape(outputs, tf.shape(inputs))


@contextlib.contextmanager
def _patched(name, replacement, keras_version):
    """Sets `BatchNormalization.<name>` while any thread is inside, for the threads inside only.

    The class attribute is shared by the process, so it stays replaced while
    any thread is inside (nested and concurrent use are safe); `replacement`
    falls back to Keras' own method in every thread that is not inside.
    """
    with _patch_lock:
        _patch_depth[name] += 1
        setattr(_BATCH_NORM, name, replacement)
    setattr(_inside, name, getattr(_inside, name, 0) + 1)
    try:
        yield
    finally:
        setattr(_inside, name, getattr(_inside, name) - 1)
        with _patch_lock:
            _patch_depth[name] -= 1
            if not _patch_depth[name]:
                setattr(_BATCH_NORM, name, keras_version)


@contextlib.contextmanager
def exact_batch_norm_moments():
    """Within this context, Keras BatchNormalization's batch variance is `mean((x - mean)^2)`.

    The values are the same as Keras'; only the gradient differs: it also
    flows through the batch mean, which second-order meta-gradients need.
    Masked and synchronized (multi-replica) batch statistics are computed by
    Keras as usual: both are already differentiable everywhere. Built from
    elementwise ops only, so it also converts to TFLite builtins.
    """
    with _patched("_moments", _exact_moments, _KERAS_MOMENTS):
        yield


@contextlib.contextmanager
def fused_batch_norm(across_replicas=False):
    """Exact batch-norm meta-gradients, fast: training-mode BatchNormalization runs TensorFlow's fused op.

    With `across_replicas=True`, under a `tf.distribute` strategy with several
    replicas, training-mode batch statistics are those of the global batch
    (summed over the replicas, as Keras' `synchronized=True`), so every replica
    updates the moving statistics identically and a step equals one device's
    step on the whole batch. One batch's statistics are one task's in the
    gradient-based learners, which leave this off.

    Same values as Keras' layer (up to float rounding); the gradient is the
    fused backward op, whose own gradient TensorFlow computes exactly, so
    second-order meta-gradients are exact. Where the fused op does not apply
    (eager execution, float64, float16, masks, synchronized statistics,
    channels-first) the layer runs as under `exact_batch_norm_moments()`.
    The learners trace their inner loops and query passes in this context.

    Checked where the layer's input is computed inside the tapes (from
    weights, as in every learner): MAML's meta-gradient against finite
    differences. A second derivative taken with respect to a tensor that is
    itself the layer's input, watched directly by both tapes, came back
    `None` in a check of the raw op: use `exact_batch_norm_moments()` there.
    """
    previous = getattr(_across_replicas, "on", False)
    _across_replicas.on = bool(across_replicas)
    try:
        with exact_batch_norm_moments(), _patched("call", _fused_call, _KERAS_CALL):
            yield
    finally:
        _across_replicas.on = previous


def within_same_batch_norm(fn):
    """`fn` wrapped to run in the batch-normalisation context active now, wherever it is called later.

    For code that TensorFlow traces again outside the context it was written
    in, such as a step recomputed by `tf.recompute_grad` during
    back-propagation: the recomputation must be the same function.
    """
    if _in_context("call"):  # this thread's contexts, not another thread's
        across_replicas = getattr(_across_replicas, "on", False)

        def context():
            return fused_batch_norm(across_replicas)
    elif _in_context("_moments"):
        context = exact_batch_norm_moments
    else:
        context = contextlib.nullcontext

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with context():
            return fn(*args, **kwargs)

    return wrapped


@contextlib.contextmanager
def batch_statistics_become_moving(model):
    """Within this context, a training-mode call sets `model`'s moving statistics to the batch's.

    The momentum of `model`'s own BatchNormalization layers is 0 inside (and
    restored after), so the call's batch statistics replace the moving ones:
    how an adapted model keeps its support set's statistics.
    """
    layers = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    try:
        yield
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
