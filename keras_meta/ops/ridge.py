"""Differentiable closed-form ridge regression (the R2D2 head).

`ridge_regression(x, y, reg)` solves `min_W ||x W - y||^2 + reg ||W||^2` for
every task of a batch, in whichever of the two equivalent forms is cheaper:
`W = (x^T x + reg I)^-1 x^T y` when there are more examples than features,
`W = x^T (x x^T + reg I)^-1 y` (Woodbury) when there are fewer.

Example:

>>> import numpy as np
>>> from keras_meta import ops
>>> x = np.array([[1.0, 0.0], [0.0, 2.0]], "float32")
>>> ops.ridge_regression(x, np.array([0, 1]), reg=1e-6, num_classes=2).numpy().round(3)
array([[1. , 0. ],
       [0. , 0.5]], dtype=float32)
"""

import tensorflow as tf


def _targets(y, num_classes, dtype):
    """One-hot class targets (padding label -1 -> zero row, mask 0) or float targets (mask 1)."""
    y = tf.convert_to_tensor(y)
    if num_classes is None:
        if y.dtype.is_integer:
            raise ValueError(
                "`y` holds integer class labels: pass `num_classes` to regress on their one-hot codes, "
                "or give float targets [..., S, T]."
            )
        y = tf.cast(y, dtype)
        if y.shape.rank is not None and y.shape.rank == 1:
            y = y[:, None]
        return y, None
    if not y.dtype.is_integer:
        raise ValueError(f"With `num_classes`, `y` must hold integer class labels, got dtype {y.dtype.name}.")
    return tf.one_hot(y, num_classes, dtype=dtype), tf.cast(y >= 0, dtype)[..., None]


def ridge_regression(x, y, reg, num_classes=None):
    """Ridge-regression weights `[..., D, T]` fitted to `x [..., S, D]` and `y`.

    Args:
        x: features `[..., S, D]` (any leading batch axes, such as tasks).
        y: float targets `[..., S, T]` (or `[S]` for one target), or integer
            class labels `[..., S]` with `num_classes` (regressed on one-hot
            codes; the padding label -1 removes the example).
        reg: the ridge penalty `lambda > 0`, a scalar (may be a trainable variable).
        num_classes: the number of classes `T` for integer labels.

    `S < D` uses the Woodbury form (an `S x S` solve), otherwise the normal
    equations (`D x D`); the choice is made when tracing if the shapes are
    static, at run time otherwise.
    Gradients flow to `x`, `y` (float) and `reg`.
    """
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        x = tf.cast(x, tf.float32)
    if x.shape.rank is not None and x.shape.rank < 2:
        raise ValueError(f"`x` must be [..., examples, features], got shape {x.shape}.")
    targets, mask = _targets(y, num_classes, x.dtype)
    if mask is not None:
        x = x * mask
    if isinstance(reg, (int, float)) and not reg > 0:
        raise ValueError(f"`reg` (the ridge penalty lambda) must be positive, got {reg}.")
    reg = tf.cast(tf.convert_to_tensor(reg, dtype_hint=x.dtype), x.dtype)

    def woodbury():
        gram = tf.matmul(x, x, transpose_b=True) + reg * tf.eye(tf.shape(x)[-2], dtype=x.dtype)
        return tf.matmul(x, tf.linalg.solve(gram, targets), transpose_a=True)

    def normal_equations():
        gram = tf.matmul(x, x, transpose_a=True) + reg * tf.eye(tf.shape(x)[-1], dtype=x.dtype)
        return tf.linalg.solve(gram, tf.matmul(x, targets, transpose_a=True))

    num_examples, num_features = x.shape[-2], x.shape[-1]
    if num_examples is not None and num_features is not None:
        return woodbury() if num_examples < num_features else normal_equations()
    return tf.cond(tf.shape(x)[-2] < tf.shape(x)[-1], woodbury, normal_equations)
