"""Meta-SGD (Li et al. 2017): MAML that also meta-learns a learning rate for every weight.

Example:

>>> import keras, keras_meta
>>> learner = keras_meta.learners.MetaSGD(keras_meta.models.conv4(num_classes=5), inner_learning_rate=0.1)
>>> [tuple(rate.shape) for rate in learner.inner_optimizer.learning_rates][:1]
[(3, 3, 1, 64)]
"""

import keras

from keras_meta.learners.maml import MAML


@keras.saving.register_keras_serializable(package="keras_meta")
class MetaSGD(MAML):
    """MAML with learned per-parameter inner learning rates (initialised to `inner_learning_rate`).

    Takes MAML's arguments; `granularity` is `"parameter"` (Meta-SGD),
    `"tensor"` or `"scalar"`. The rates are weights of the learner, trained by
    the outer optimizer and saved with it.
    """

    def __init__(self, model, inner_learning_rate=0.1, granularity="parameter", **kwargs):
        if "learn_inner_learning_rate" in kwargs:
            raise ValueError("MetaSGD always learns its inner learning rates; say how finely with `granularity` "
                             "(\"parameter\", \"tensor\" or \"scalar\"), not `learn_inner_learning_rate`.")
        super().__init__(model, inner_learning_rate=inner_learning_rate, learn_inner_learning_rate=granularity,
                         **kwargs)

    def get_config(self):
        config = super().get_config()
        config["granularity"] = config.pop("learn_inner_learning_rate")
        return config
