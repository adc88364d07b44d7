"""Functional inner-loop optimizers: a Keras optimizer's update rule on tensors, with no variables.

A Keras optimizer updates variables in place, which tasks adapted at the same
time (`parallel_tasks`) or on several replicas (`tf.distribute`) cannot share.
`functional_optimizer(optimizer)` reads the configuration of a Keras `SGD`
(momentum, Nesterov) or `Adam` (AMSGrad) and returns the same update rule as
pure functions of tensors: `state = init(params)`, then
`params, state = step(params, grads, state)`, each task starting from a fresh
state. The updates are Keras' own formulas (tested against the optimizers).

Example:

>>> import keras, tensorflow as tf
>>> from keras_meta.learners.inner_optimizers import functional_optimizer
>>> adam = functional_optimizer(keras.optimizers.Adam(0.1))
>>> params = [tf.constant([1.0, 2.0])]
>>> state = adam.init(params)
>>> params, state = adam.step(params, [tf.constant([1.0, -1.0])], state)
>>> [round(float(p), 3) for p in params[0]]
[0.9, 2.1]
"""

import keras
import tensorflow as tf

SUPPORTED = ("SGD", "Adam")
_UNSUPPORTED_OPTIONS = ("weight_decay", "clipnorm", "clipvalue", "global_clipnorm", "use_ema",
                        "gradient_accumulation_steps", "loss_scale_factor")


def functional_optimizer(optimizer):
    """The update rule of a Keras `SGD` or `Adam` optimizer (or its name) as a `FunctionalOptimizer`."""
    optimizer = keras.optimizers.get(optimizer)
    name = type(optimizer).__name__
    if name not in SUPPORTED:
        raise ValueError(
            f"The inner optimizer must be one of {SUPPORTED} (Keras optimizers whose update rule keras-meta "
            f"runs functionally, task by task), got {name}."
        )
    config = optimizer.get_config()
    used = [option for option in _UNSUPPORTED_OPTIONS if config.get(option) not in (None, False, 0, 0.0)]
    if used:
        raise ValueError(
            f"The inner optimizer sets {used}, which the functional inner loop does not apply; "
            "leave them unset (clip inner steps with the learner's own options instead)."
        )
    schedule = optimizer._learning_rate  # the schedule itself (`optimizer.learning_rate` is its current value)
    if not isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        schedule = float(config["learning_rate"])
    return FunctionalOptimizer(name, schedule, config)


class FunctionalOptimizer:
    """`init(params)` and `step(params, grads, state)` of one Keras update rule."""

    def __init__(self, kind, learning_rate, config):
        self.kind = kind
        self.learning_rate = learning_rate
        self.config = config

    def rate(self, iterations, dtype):
        """The learning rate at step `iterations` (0-based), as a `dtype` scalar."""
        if isinstance(self.learning_rate, keras.optimizers.schedules.LearningRateSchedule):
            return tf.cast(self.learning_rate(iterations), dtype)
        return tf.constant(self.learning_rate, dtype)

    def init(self, params):
        """The fresh state of a task: step 0 and zero slots."""
        slots = 0
        if self.kind == "SGD":
            slots = 1 if self.config["momentum"] else 0
        elif self.kind == "Adam":
            slots = 3 if self.config["amsgrad"] else 2
        return {"iterations": tf.constant(0, tf.int64), "slots": [[tf.zeros_like(p) for p in params]
                                                                  for _ in range(slots)]}

    def step(self, params, grads, state):
        """`(new params, new state)` after one update with `grads`."""
        iterations = state["iterations"]
        dtype = params[0].dtype
        rate = self.rate(iterations, dtype)
        update = self._sgd if self.kind == "SGD" else self._adam
        params, slots = update(params, grads, state["slots"], rate, tf.cast(iterations + 1, dtype))
        return params, {"iterations": iterations + 1, "slots": slots}

    def _sgd(self, params, grads, slots, rate, _):
        momentum = self.config["momentum"]
        if not momentum:
            return [p - rate * g for p, g in zip(params, grads, strict=True)], slots
        velocities = [momentum * m - rate * g for m, g in zip(slots[0], grads, strict=True)]
        if self.config["nesterov"]:
            params = [p + momentum * m - rate * g for p, m, g in zip(params, velocities, grads, strict=True)]
        else:
            params = [p + m for p, m in zip(params, velocities, strict=True)]
        return params, [velocities]

    def _adam(self, params, grads, slots, rate, local_step):
        beta_1, beta_2, epsilon = self.config["beta_1"], self.config["beta_2"], self.config["epsilon"]
        alpha = rate * tf.sqrt(1.0 - tf.pow(beta_2, local_step)) / (1.0 - tf.pow(beta_1, local_step))
        firsts = [m + (g - m) * (1.0 - beta_1) for m, g in zip(slots[0], grads, strict=True)]
        seconds = [v + (tf.square(g) - v) * (1.0 - beta_2) for v, g in zip(slots[1], grads, strict=True)]
        new_slots = [firsts, seconds]
        denominators = seconds
        if self.config["amsgrad"]:
            denominators = [tf.maximum(vhat, v) for vhat, v in zip(slots[2], seconds, strict=True)]
            new_slots.append(denominators)
        params = [p - m * alpha / (tf.sqrt(v) + epsilon) for p, m, v in zip(params, firsts, denominators, strict=True)]
        return params, new_slots
