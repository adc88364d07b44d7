"""`LearnableOptimizer`: an inner-loop update rule whose own parameters are meta-trained.

The update of each adapted weight is `-learning_rate * gradient`, with learning
rates that are Keras variables of the learner: the outer optimizer trains them
together with the meta-weights, through the inner loop (Meta-SGD, Li et al.
2017; meta-descent in the spirit of Sutton 1992). `granularity` chooses one
rate per parameter, per weight tensor, or one for all; `steps=K` gives each
of the first K inner steps rates of its own (the per-layer, per-step rates of
MAML++, Antoniou et al. 2019, with `granularity="tensor"`). A `transform`
(`"kronecker"`, `"meta_curvature"`, or a `GradientTransform`) preconditions
each gradient with learned matrices before the rate scales it; with
`granularity=None` the rate stays `initial_learning_rate` and only the
transform is learned.

Example:

>>> import tensorflow as tf
>>> from keras_meta.learners import LearnableOptimizer
>>> optimizer = LearnableOptimizer(initial_learning_rate=0.1)
>>> optimizer.build_for([(3, 2), (2,)])
>>> [u.shape for u in optimizer([tf.ones([3, 2]), tf.ones([2])])]
[TensorShape([3, 2]), TensorShape([2])]
"""

import keras
import tensorflow as tf

from keras_meta.data.checks import integer_argument
from keras_meta.learners.gradient_transforms import get_transform

GRANULARITIES = ("parameter", "tensor", "scalar")


@keras.saving.register_keras_serializable(package="keras_meta")
class LearnableOptimizer(keras.layers.Layer):
    """Per-parameter (or per-tensor, or global) learnable inner learning rates.

    Args:
        initial_learning_rate: the starting value of every rate.
        granularity: `"parameter"` (a rate for every scalar weight, Meta-SGD),
            `"tensor"` (one per weight tensor), `"scalar"` (one in all), or
            `None` (the fixed `initial_learning_rate`; only with a `transform`).
        steps: `None` (the same rates at every inner step) or K: rates of
            their own for each of the first K inner steps; later steps (more
            steps at evaluation than in training) use the last step's.
        transform: `None`, `"kronecker"`, `"meta_curvature"` or a
            `GradientTransform`: the updates become `-rate * transform(grad)`,
            its matrices meta-trained with the rates (the same at every step).

    Call `build_for(shapes)` with the shapes of the weights it updates, then
    `optimizer(grads, step=step)` returns the updates `-rate * grad` of inner step
    `step` (from 0), differentiable with respect to the rates.
    """

    def __init__(self, initial_learning_rate=0.01, granularity="parameter", steps=None, transform=None, **kwargs):
        super().__init__(**kwargs)
        if granularity not in GRANULARITIES + (None,):
            raise ValueError(f"`granularity` must be one of {GRANULARITIES} or None, got {granularity!r}.")
        self.transform = get_transform(transform)
        if granularity is None and (self.transform is None or steps is not None):
            raise ValueError("`granularity=None` learns no rates: it needs a `transform` to learn, and no `steps`.")
        self.steps = None if steps is None else integer_argument(
            "steps", steps, unit=" (inner steps with rates of their own) or None")
        self.initial_learning_rate = float(initial_learning_rate)
        self.granularity = granularity
        self.learning_rates = []

    def build_for(self, shapes):
        """Creates the learning-rate variables for weights of these shapes."""
        if self.built:
            return
        if self.granularity is None:
            self.learning_rates = [self.initial_learning_rate] * len(shapes)
        else:
            self.learning_rates = self.rate_variables(shapes)
        if self.transform is not None:  # after the rates: the order of the variables a reload restores
            self.transform.build_for(shapes)
        self.built = True

    def rate_variables(self, shapes):
        """The learned rates of weights of these shapes, one per weight (the same variable for all if scalar)."""
        initializer = keras.initializers.Constant(self.initial_learning_rate)
        per_step = () if self.steps is None else (self.steps,)
        if self.granularity == "scalar":
            return [self.add_weight(shape=per_step, initializer=initializer, name="learning_rate")] * len(shapes)
        return [self.add_weight(shape=per_step + (tuple(shape) if self.granularity == "parameter" else ()),
                                initializer=initializer, name=f"learning_rate_{i}")
                for i, shape in enumerate(shapes)]

    def call(self, grads, step=0):
        if len(grads) != len(self.learning_rates):
            raise ValueError(
                f"Got {len(grads)} gradients but the optimizer was built for {len(self.learning_rates)} weights."
            )
        rates = self.learning_rates
        if self.steps is not None:
            rates = [rate[min(step, self.steps - 1)] for rate in rates]
        if self.transform is not None:
            grads = self.transform(grads)
        return [-tf.cast(rate, g.dtype) * g for rate, g in zip(rates, grads, strict=True)]

    def compute_output_spec(self, grads, step=0):
        return grads

    def get_config(self):
        config = super().get_config()
        config.update(initial_learning_rate=self.initial_learning_rate, granularity=self.granularity, steps=self.steps,
                      transform=None if self.transform is None else keras.saving.serialize_keras_object(self.transform))
        return config
