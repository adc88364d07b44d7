"""Learned preconditioning of inner-loop gradients: the transforms of a `LearnableOptimizer`.

A transform maps each gradient `G` of an adapted weight to `T(G)`, a linear map
with meta-trained parameters, before the learning rate scales it. Both
transforms here multiply the gradient, along each of its modes, by a learned
square matrix that starts as the identity (so a new learner adapts exactly as
plain MAML or Meta-SGD would):

* `KroneckerTransform`: a gradient seen as the matrix `[fan_in, units]` (a
  kernel's leading axes together) becomes `L @ G @ R.T`, i.e. the
  preconditioner `L ⊗ R` (Kronecker-factored, the KFO transform of Arnold et
  al. 2021, "When MAML can adapt fast and how to assist when it cannot");
* `MetaCurvatureTransform`: a convolution kernel `[kh, kw, in, out]` is
  multiplied along its spatial, input and output modes by three matrices, a
  dense kernel along its two (meta-curvature, Park & Oliva 2019, "Meta-Curvature").

A vector (a bias) gets one full matrix in both. Parameters per weight tensor:
Kronecker `fan_in² + units²` (576² + 64² for a 3x3x64x64 kernel),
meta-curvature `(kh·kw)² + in² + out²` (9² + 64² + 64²).

Example:

>>> import numpy as np
>>> from keras_meta.learners import KroneckerTransform
>>> transform = KroneckerTransform()
>>> transform.build_for([(3, 2), (2,)])
>>> [tuple(m.shape) for m in transform.matrices[0]]
[(3, 3), (2, 2)]
>>> g = np.arange(6, dtype="float32").reshape(3, 2)
>>> bool(np.allclose(transform([g, np.ones(2, "float32")])[0], g))  # the identity until trained
True
"""

import math

import keras
import tensorflow as tf

LETTERS = "abc"  # the modes of a gradient: at most three


class GradientTransform(keras.layers.Layer):
    """A learned linear map of each gradient along its modes, one matrix per mode (the identity at first).

    Subclasses say how a weight's shape splits into modes (`modes(shape)`).
    Call `build_for(shapes)`, then `transform(grads)` returns the transformed
    gradients, differentiable with respect to the matrices.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.matrices = []

    def modes(self, shape):
        """The sizes of the modes a gradient of `shape` is multiplied along (their product is its size)."""
        raise NotImplementedError

    def build_for(self, shapes):
        """Creates the matrices for weights of these shapes."""
        if self.built:
            return
        self.matrices = []
        for i, shape in enumerate(shapes):
            sizes = self.modes(tuple(shape))
            if math.prod(sizes) != math.prod(shape) or not 1 <= len(sizes) <= len(LETTERS):
                raise ValueError(f"{type(self).__name__}.modes({tuple(shape)}) returned {sizes}: between 1 and "
                                 f"{len(LETTERS)} sizes whose product is the weight's size.")
            self.matrices.append([self.add_weight(shape=(n, n), initializer="identity", name=f"transform_{i}_{k}")
                                  for k, n in enumerate(sizes)])
        self.built = True

    def call(self, grads):
        if len(grads) != len(self.matrices):
            raise ValueError(f"Got {len(grads)} gradients but the transform was built for {len(self.matrices)} "
                             "weights.")
        return [self.transform_one(g, matrices) for g, matrices in zip(grads, self.matrices, strict=True)]

    def transform_one(self, grad, matrices):
        """`grad` multiplied along mode k by `matrices[k]` (`out_k = sum_j M_k[i, j] in_k[j]`)."""
        sizes = [m.shape[0] for m in matrices]
        letters = LETTERS[:len(sizes)]
        outputs = letters.upper()
        terms = [f"{out}{inp}" for out, inp in zip(outputs, letters, strict=True)]
        equation = ",".join(terms + [letters]) + "->" + outputs
        mapped = tf.einsum(equation, *[tf.cast(m, grad.dtype) for m in matrices], tf.reshape(grad, sizes))
        return tf.reshape(mapped, tf.shape(grad))

    def compute_output_spec(self, grads):
        return grads


@keras.saving.register_keras_serializable(package="keras_meta")
class KroneckerTransform(GradientTransform):
    """`G -> L @ G @ R.T` for a gradient seen as `[fan_in, units]`: the Kronecker-factored preconditioner `L ⊗ R`.

    A vector (a bias, a batch-norm scale) is one mode: `G -> L @ G`.
    """

    def modes(self, shape):
        if len(shape) <= 1:
            return (math.prod(shape),)
        return (math.prod(shape[:-1]), shape[-1])


@keras.saving.register_keras_serializable(package="keras_meta")
class MetaCurvatureTransform(GradientTransform):
    """Meta-curvature: a kernel multiplied along its spatial, input and output modes (`[kh·kw, in, out]`).

    A dense kernel `[in, out]` has two modes and a vector one; a kernel of rank
    3 or more has its leading (spatial) axes as one mode.
    """

    def modes(self, shape):
        if len(shape) <= 2:
            return tuple(shape) if shape else (1,)
        return (math.prod(shape[:-2]), shape[-2], shape[-1])


TRANSFORMS = {"kronecker": KroneckerTransform, "meta_curvature": MetaCurvatureTransform}


def get_transform(transform):
    """A new `GradientTransform` from a name in `TRANSFORMS`, a serialized one, or the instance itself (None: none)."""
    if transform is None or isinstance(transform, GradientTransform):
        return transform
    if isinstance(transform, dict):
        return keras.saving.deserialize_keras_object(transform)
    if transform in TRANSFORMS:
        return TRANSFORMS[transform]()
    raise ValueError(f"Unknown gradient transform {transform!r}: give one of {sorted(TRANSFORMS)}, a "
                     "`GradientTransform` instance, or None.")
