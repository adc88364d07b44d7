"""The state of an on-device adaptation file: its variables, `save` / `restore` / `reset`, and `.npz` files of it.

Example:

>>> import os, tempfile, numpy as np, keras_meta
>>> from keras_meta import lite
>>> learner = keras_meta.learners.ANIL(keras_meta.models.mlp((4,), hidden_units=(8,), num_outputs=3))
>>> device = lite.LiteModel(lite.export_on_device_learner(learner))
>>> _ = device.run("adapt", support_x=np.ones((3, 4)), support_y=np.arange(3))
>>> path = lite.save_state(device, os.path.join(tempfile.mkdtemp(), "state.npz"))
>>> sorted(np.load(path).files)
['weight_0', 'weight_1']
"""

import numpy as np
import tensorflow as tf


def named_state(variables):
    """`[(name, variable)]` of the file's state: the adapted weights (`weight_i`), then the statistics (`state_i`)."""
    weights = [v for v in variables if v.name.startswith("weight_")]
    states = [v for v in variables if v.name.startswith("state_")]
    return [(v.name.split(":")[0], v) for v in weights + states]


def state_outputs(variables, values):
    """`{name: value}` of the file's state, from values in the order of `variables`."""
    value_of = {id(v): value for v, value in zip(variables, values, strict=True)}
    return {name: value_of[id(v)] for name, v in named_state(variables)}


def state_functions(variables, initial):
    """`save`, `restore` and `reset` over the file's variables."""
    named = named_state(variables)

    def save():
        return {name: tf.identity(v) for name, v in named}

    def restore(*values):
        for (_, v), value in zip(named, values, strict=True):
            v.assign(value)
        return {"restored": tf.constant(len(named), tf.int32)}

    def reset():
        for (_, v), value in zip(named, initial, strict=True):
            v.assign(value)
        return {"reset": tf.constant(len(named), tf.int32)}

    return save, restore, reset


def save_state(lite_model, path, state=None):
    """Writes the adapted state of an on-device file (`LiteModel`) to a `.npz` file; returns `path`.

    `state`: the outputs of an `adapt` call (needed for int8 files, which
    have no `save` signature); default: the file's `save` signature.
    """
    if state is None:
        if "save" not in lite_model.signatures:
            raise ValueError("This file has no `save` signature (int8): pass `state=`, the outputs of `adapt`.")
        state = lite_model.run("save")
    np.savez(path, **{name: value for name, value in state.items() if name != "loss"})
    return path


def restore_state(lite_model, path):
    """Puts a state written by `save_state` back into an on-device file (`LiteModel`)."""
    with np.load(path) as data:
        lite_model.run("restore", **{name: data[name] for name in data.files})
    return lite_model
