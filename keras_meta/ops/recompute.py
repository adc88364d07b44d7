"""Gradient checkpointing for functions that take gradients themselves (an inner step of MAML).

`recompute_gradient(fn)` returns `fn` with the same values and gradients,
whose backward pass runs `fn` again instead of keeping the tensors of its
forward pass: memory for speed. Unlike `tf.recompute_grad`, the forward pass
keeps gradient tapes recording, so `fn` may use its own `tf.GradientTape`
(an inner-loop step computes the support-set gradient), and the gradient
through `fn` includes the second-order terms of that inner gradient.

Example:

>>> import tensorflow as tf
>>> def step(w):  # one gradient step on w**3
...     with tf.GradientTape() as tape:
...         tape.watch(w)
...         loss = w ** 3
...     return w - 0.1 * tape.gradient(loss, w)
>>> w = tf.constant(2.0)
>>> with tf.GradientTape() as tape:
...     tape.watch(w)
...     adapted = recompute_gradient(step)(w)
>>> round(float(tape.gradient(adapted, w)), 4)  # d/dw (w - 0.3 w**2) = 1 - 0.6 w
-0.2
"""

import functools

import tensorflow as tf


def recompute_gradient(fn):
    """`fn(*tensors) -> tensor or list of tensors`, recomputed during back-propagation (see the module docstring).

    `fn` takes floating-point tensors as positional arguments; variables it
    reads (learned step sizes, say) get their gradients too. The gradient of
    the result is that of `fn` itself: run `fn` inside the same contexts
    (batch normalisation, say) wherever it is called.
    """

    @tf.custom_gradient
    def checkpointed(*args):
        result = fn(*args)

        def gradient(*result_grads, variables=None):
            variables = list(variables or [])
            after = _zero_after(result_grads[0])
            with tf.GradientTape() as tape:
                inputs = [arg + tf.cast(after, arg.dtype) for arg in args]
                tape.watch(inputs + variables)
                again = fn(*inputs)
            grads = tape.gradient(again, inputs + variables, output_gradients=list(result_grads),
                                  unconnected_gradients=tf.UnconnectedGradients.ZERO)
            if variables:
                return grads[:len(args)], grads[len(args):]
            return grads

        return result, gradient

    return functools.wraps(fn)(checkpointed)


def _zero_after(tensor):
    """A scalar 0 computed from `tensor`'s value.

    Added to the inputs of the recomputation, it makes the recomputation wait
    for the incoming gradient (so it runs in the backward pass, not with the
    forward one) and keeps graph optimisation from merging it with the
    forward pass's identical ops (which would keep their tensors alive).
    """
    flag = tf.cast(tf.reduce_max(tf.reshape(tensor, [-1])[:1]), tf.bool)  # NaN, -inf (empty), any value
    return tf.stop_gradient(tf.where(tf.equal(flag, flag), 0.0, float("nan")))  # always 0, not foldable
