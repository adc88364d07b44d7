"""MAML++ (Antoniou et al. 2019, "How to train your MAML"): MAML with the fixes that make it train stably.

`MAMLPlusPlus` is `MAML` with these options on, each of which MAML also takes
on its own:

* the multi-step loss, its weights annealed from equal to the last step's
  alone over the first tenth of training (`multi_step_loss_annealing_steps`);
* derivative-order annealing: first order for the first third of training,
  second order after (`first_order_steps`), in one traced training function;
* learned per-layer, per-step inner learning rates
  (`learn_inner_learning_rate="tensor"`, `per_step_inner_learning_rates`);
* per-step batch-normalisation scales and offsets (`per_step_batch_norm`,
  where the model has BatchNormalization layers).

The fifth fix, cosine annealing of the meta learning rate, is Keras' own
schedule: pass `keras.optimizers.schedules.CosineDecay` to the optimizer.

Example:

>>> import keras, keras_meta
>>> steps = 3000
>>> learner = keras_meta.learners.MAMLPlusPlus(keras_meta.models.conv4(num_classes=5), training_steps=steps)
>>> (learner.inner_steps, learner.first_order_steps, learner.multi_step_loss_annealing_steps)
(5, 1000, 300)
>>> schedule = keras.optimizers.schedules.CosineDecay(1e-3, decay_steps=steps, alpha=0.01)
>>> learner.compile(optimizer=keras.optimizers.Adam(schedule),
...                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
>>> learner.fit(sampler.dataset(batch_size=16), epochs=10, steps_per_epoch=steps // 10)  # doctest: +SKIP
"""

import keras

from keras_meta.data.checks import integer_argument
from keras_meta.learners.maml import MAML


@keras.saving.register_keras_serializable(package="keras_meta")
class MAMLPlusPlus(MAML):
    """MAML with MAML++'s options on, their schedules set from the length of training.

    Args:
        model: a built Keras model (see `MAML`).
        training_steps: the training steps (optimizer iterations) planned:
            the multi-step loss anneals over the first tenth of them and the
            first third are first order (the proportions of the paper's 150
            epochs: 15 and 50).
        inner_learning_rate: the initial value of the learned rates.
        inner_steps: inner steps in training (and, by default, evaluation).
        **kwargs: any other `MAML` argument, overriding the preset's
            (`first_order_steps=0` trains second order from the start;
            `multi_step_loss=False`, `first_order=True` or
            `learn_inner_learning_rate=False` also drop the annealing,
            derivative-order or per-step presets that refine them).
    """

    def __init__(self, model, training_steps=10000, inner_learning_rate=0.1, inner_steps=5, **kwargs):
        self.training_steps = integer_argument("training_steps", training_steps, unit=" (the training steps planned)")
        has_batch_norm = isinstance(model, keras.Model) and any(
            isinstance(layer, keras.layers.BatchNormalization) and layer.trainable and (layer.scale or layer.center)
            for layer in model._flatten_layers(include_self=False))
        options = dict(multi_step_loss=True, multi_step_loss_annealing_steps=training_steps // 10,
                       first_order_steps=training_steps // 3, learn_inner_learning_rate="tensor",
                       per_step_inner_learning_rates=True, per_step_batch_norm=has_batch_norm)
        # A fix turned off takes the preset that refines it along (unless that one is given too).
        refinements_off = {"multi_step_loss_annealing_steps": not kwargs.get("multi_step_loss", True),
                           "first_order_steps": bool(kwargs.get("first_order", False)),
                           "per_step_inner_learning_rates": not kwargs.get("learn_inner_learning_rate", "tensor")}
        for refinement, off in refinements_off.items():
            if off and refinement not in kwargs:
                options.pop(refinement)
        options.update(kwargs)
        super().__init__(model, inner_learning_rate=inner_learning_rate, inner_steps=inner_steps, **options)

    def get_config(self):
        return dict(super().get_config(), training_steps=self.training_steps)
