"""ANIL, Almost No Inner Loop (Raghu et al. 2020): MAML that adapts only the head.

The body is meta-trained by the outer loop but frozen during adaptation, which
makes the inner loop much cheaper with little loss of accuracy.

Example:

>>> import keras_meta
>>> learner = keras_meta.learners.ANIL(keras_meta.models.conv4(num_classes=5))
>>> learner.adapt_layers
['logits']
"""

import keras

from keras_meta.learners.gradient_based import last_weighted_layer
from keras_meta.learners.maml import MAML


@keras.saving.register_keras_serializable(package="keras_meta")
class ANIL(MAML):
    """MAML whose inner loop adapts `adapt_layers` only: by default the model's last layer with weights.

    Takes MAML's arguments.
    """

    def __init__(self, model, adapt_layers=None, **kwargs):
        if adapt_layers is None and isinstance(model, keras.Model):
            adapt_layers = [last_weighted_layer(model)]
        super().__init__(model, adapt_layers=adapt_layers, **kwargs)

    def get_config(self):
        config = super().get_config()
        if config["adapt_layers"] is None:  # every layer: None would mean ANIL's default, the head
            config["adapt_layers"] = "all"
        return config
