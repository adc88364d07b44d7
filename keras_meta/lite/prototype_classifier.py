"""A prototype classifier for devices: learn new classes from a support set given at run time.

`export_prototype_classifier(learner, path)` writes one `.tflite` file with
three signatures, from a `PrototypicalNetwork` (or any embedding model):

* `embed(x [n, ...])` -> `embeddings [n, D]`;
* `prototypes(support_x [s, ...], support_y [s] int32)` -> `prototypes
  [max_ways, D]`, `counts [max_ways]`: the mean embedding of each class and
  its number of examples. Any number `N <= max_ways` of classes works: label
  the support examples `0..N-1`; the slots of absent classes get count 0.
  Labels outside `0..max_ways-1` (such as -1 for padding) are ignored;
* `classify(x [n, ...], prototypes [max_ways, D], counts [max_ways])` ->
  `logits [n, max_ways]`: the learner's logits (negative squared Euclidean
  distances, or scaled cosine similarities); classes with count 0 get -1e9,
  so `argmax` picks among the `N` classes given.

Batch and support sizes are dynamic. The app stores the prototypes (or the
embeddings, to add examples later) and needs no retraining and no server.

Example:

>>> import numpy as np, keras_meta
>>> from keras_meta import lite
>>> learner = keras_meta.learners.PrototypicalNetwork(keras_meta.models.conv4(filters=4))
>>> device = lite.LiteModel(lite.export_prototype_classifier(learner, max_ways=5))
>>> support_x, support_y = np.random.rand(3, 28, 28, 1), np.arange(3)
>>> classes = device.run("prototypes", support_x=support_x, support_y=support_y)
>>> logits = device.run("classify", x=support_x, prototypes=classes["prototypes"],
...                     counts=classes["counts"])["logits"]
>>> logits.shape, bool(logits[0, 3] < -1e8)
((3, 5), True)
"""

import keras
import numpy as np
import tensorflow as tf

from keras_meta.data.checks import integer_argument
from keras_meta.data.episode_format import MASKED_LOGIT, SUPPORT_X, SUPPORT_Y
from keras_meta.lite import converter
from keras_meta.lite.conversion_errors import LiteConversionError
from keras_meta.lite.export import input_specs
from keras_meta.lite.quantize import calibration, check_quantize
from keras_meta.ops import distances

# With int8, these ops (the backbone's) are quantized; the prototype and distance arithmetic stays float32:
# int8 sums of squares lose the small differences between classes that decide the prediction.
BACKBONE_INT8_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D", "FULLY_CONNECTED", "MEAN")


def backbone_of(learner_or_backbone):
    """`(backbone, distance, cosine_scale)` from a PrototypicalNetwork or an embedding model."""
    from keras_meta.learners import PrototypicalNetwork

    if isinstance(learner_or_backbone, PrototypicalNetwork):
        return learner_or_backbone.backbone, learner_or_backbone.distance, learner_or_backbone.cosine_scale
    if isinstance(learner_or_backbone, keras.Model) and learner_or_backbone.built \
            and len(learner_or_backbone.output_shape) == 2:
        return learner_or_backbone, "euclidean", 10.0
    raise LiteConversionError(
        "A prototype classifier needs a PrototypicalNetwork or an embedding model (built, output [batch, D]), "
        f"got {type(learner_or_backbone).__name__}."
    )


def elementwise_prototype_logits(embeddings, protos, distance, cosine_scale):
    """`ops.prototype_logits` `[n, P]` written with elementwise differences for the converter.

    No `|q|^2 + |p|^2 - 2 q.p` cancellation, whose round-off can swamp the
    small differences between classes.
    """
    if distance == "euclidean":
        return -tf.reduce_sum(tf.square(embeddings[:, None, :] - protos[None, :, :]), axis=-1)
    unit_q = embeddings * tf.math.rsqrt(tf.maximum(tf.reduce_sum(tf.square(embeddings), -1, keepdims=True), 1e-8))
    unit_p = protos * tf.math.rsqrt(tf.maximum(tf.reduce_sum(tf.square(protos), -1, keepdims=True), 1e-8))
    return cosine_scale * tf.reduce_sum(unit_q[:, None, :] * unit_p[None, :, :], axis=-1)


def prototype_archive(backbone, distance="euclidean", cosine_scale=10.0, max_ways=20):
    """The `keras.export.ExportArchive` with the `embed`, `prototypes` and `classify` endpoints."""
    if distance not in distances.DISTANCES:
        raise ValueError(f"`distance` must be one of {distances.DISTANCES}, got {distance!r}.")
    integer_argument("max_ways", max_ways)
    (spec,) = input_specs(backbone)
    example_shape = spec.shape[1:]
    dim = backbone.output_shape[-1]
    archive = keras.export.ExportArchive()
    archive.track(backbone)

    def embed(x):
        return {"embeddings": backbone(x, training=False)}

    def prototypes(support_x, support_y):
        embeddings = backbone(support_x, training=False)
        one_hot = tf.one_hot(support_y, max_ways, dtype=embeddings.dtype)  # labels out of range: all zeros
        counts = tf.reduce_sum(one_hot, axis=0)
        sums = tf.reduce_sum(one_hot[:, :, None] * embeddings[:, None, :], axis=0)
        return {"prototypes": sums / tf.maximum(counts, 1.0)[:, None], "counts": counts}

    def classify(x, protos, counts):
        logits = elementwise_prototype_logits(backbone(x, training=False), protos, distance, cosine_scale)
        return {"logits": tf.where(counts[None, :] > 0, logits, tf.constant(MASKED_LOGIT, logits.dtype))}

    images = tf.TensorSpec([None, *example_shape], spec.dtype, name="x")
    archive.add_endpoint("embed", embed, input_signature=[images])
    archive.add_endpoint("prototypes", prototypes, input_signature=[
        tf.TensorSpec([None, *example_shape], spec.dtype, name=SUPPORT_X),
        tf.TensorSpec([None], tf.int32, name=SUPPORT_Y),
    ])
    archive.add_endpoint("classify", classify, input_signature=[
        images, tf.TensorSpec([max_ways, dim], tf.float32, name="prototypes"),
        tf.TensorSpec([max_ways], tf.float32, name="counts"),
    ])
    return archive


def export_prototype_classifier(learner, path=None, max_ways=20, quantize=None, representative_data=None,
                                distance=None, cosine_scale=None, allow_flex=False):
    """Writes the prototype classifier of a `PrototypicalNetwork` (or embedding model); returns the bytes.

    Args:
        learner: a `PrototypicalNetwork` (its backbone, distance and cosine
            scale are used) or a built embedding model `[batch, ...] -> [batch, D]`.
        path: the `.tflite` file to write (None: only return the bytes).
        max_ways: the most classes a support set may have.
        quantize: None, `"dynamic"`, `"float16"` or `"int8"`.
        representative_data: for int8, an array of typical images (e.g.
            `lite.representative_images(...)`): the backbone is calibrated on
            them, the distances on support sets drawn from them.
        distance, cosine_scale: override the learner's.
        allow_flex: allow TensorFlow (Flex) ops.
    """
    backbone, learner_distance, learner_scale = backbone_of(learner)
    distance = distance or learner_distance
    cosine_scale = learner_scale if cosine_scale is None else float(cosine_scale)
    archive = prototype_archive(backbone, distance, cosine_scale, max_ways)
    dataset = None
    if check_quantize(quantize) == "int8":
        dataset = _calibration(backbone, representative_data, max_ways)
    content = converter.convert_archive(archive, ["embed", "prototypes", "classify"], quantize, dataset,
                                     allow_flex=allow_flex, model=backbone, int8_ops=BACKBONE_INT8_OPS)
    if path is not None:
        converter.write(path, content)
    return content


def _calibration(backbone, images, max_ways, ways=5):
    """Calibration samples of the three signatures: support sets of `ways` images and as many other images."""
    if images is not None and not callable(images):
        ways = max(1, min(ways, max_ways, len(images)))  # an empty array: `calibration` says so

    def samples(data, start):
        x = data[start:start + ways]
        labels = np.arange(ways, dtype=np.int32)
        embeddings = backbone(x, training=False)
        protos, counts = distances.class_prototypes(embeddings, labels, max_ways)
        yield "embed", {"x": x}
        yield "prototypes", {SUPPORT_X: x, SUPPORT_Y: labels}
        queries = np.roll(data, -(start + ways), axis=0)[:ways]
        yield "classify", {"x": queries, "prototypes": protos.numpy(), "counts": counts.numpy()}

    return calibration(images, ways, samples)
