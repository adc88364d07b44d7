"""What an on-device adaptation file takes from a learner: is it one it can run, its head, its learning rates.

Example:

>>> import keras_meta
>>> from keras_meta.lite import on_device_checks
>>> learner = keras_meta.learners.ANIL(keras_meta.models.mlp((4,), hidden_units=(8,), num_outputs=3))
>>> on_device_checks.head_layer(on_device_checks.check_learner(learner).model).units
3
"""

import keras
import numpy as np

from keras_meta.lite.conversion_errors import LiteConversionError


def check_learner(learner):
    """`learner` if a file can adapt as it does (a MAML-family learner with plain SGD steps), else an error."""
    from keras_meta.learners import MAML

    if not isinstance(learner, MAML):
        raise LiteConversionError(
            "On-device adaptation takes a MAML, MetaSGD or ANIL learner (SGD steps with its inner learning "
            f"rates), got {type(learner).__name__}. Export `learner.adapt(...)` with `export_model` instead."
        )
    if getattr(learner.inner_optimizer, "steps", None) is not None or getattr(learner, "batch_norm_steps", None):
        raise LiteConversionError(
            f"On-device adaptation runs the same learning rates and batch-norm weights at every inner step; this "
            f"{type(learner).__name__} has per-step ones (`per_step_inner_learning_rates` or `per_step_batch_norm`, "
            "as MAMLPlusPlus). Export `learner.adapt(...)` with `export_model` instead."
        )
    if getattr(learner.inner_optimizer, "transform", None) is not None:
        raise LiteConversionError(
            f"On-device adaptation takes plain SGD steps with learned rates; this {type(learner).__name__} "
            "preconditions its gradients (`inner_transform`). Export `learner.adapt(...)` with `export_model` instead."
        )
    loss = learner.inner_loss if learner.inner_loss is not None else getattr(learner, "loss", None)
    if loss is not None and not isinstance(loss, (dict, list, tuple)):
        loss = keras.losses.get(loss)
        config = loss.get_config() if isinstance(loss, keras.losses.Loss) else {}
        if not isinstance(loss, keras.losses.SparseCategoricalCrossentropy) or not config.get("from_logits"):
            raise LiteConversionError(
                "On-device adaptation implements the softmax cross-entropy of integer labels "
                "(SparseCategoricalCrossentropy(from_logits=True)); the learner's inner loss is "
                f"{getattr(loss, 'name', loss)!r}."
            )
    return learner


def learning_rates(learner):
    """One rate (scalar or per-parameter array) per trainable variable of `learner.model` (None if frozen)."""
    model = learner.model
    rates = [None] * len(model.trainable_variables)
    adapted = [i for i, adapts in enumerate(learner.adapt_mask) if adapts]
    if learner.inner_optimizer is None:
        for i in adapted:
            rates[i] = np.float32(learner.inner_learning_rate)
    else:
        for i, rate in zip(adapted, learner.inner_optimizer.learning_rates, strict=True):
            rates[i] = np.asarray(keras.ops.convert_to_numpy(rate), np.float32)
    return rates


def head_layer(model):
    """The last layer of `model`: a `Dense` layer computing linear logits, with a bias."""
    layers = model.layers
    head = layers[-1] if layers else None
    if not isinstance(head, keras.layers.Dense) or head.activation not in (None, keras.activations.linear) \
            or not head.use_bias:
        name = head.name if head is not None else "?"
        raise LiteConversionError(
            f"adapt_layers='head' needs a model whose last layer is a Dense layer of linear logits with a bias; "
            f"layer {name!r} ({type(head).__name__}) is not. Use adapt_layers='all' (needs Flex ops)."
        )
    return head
