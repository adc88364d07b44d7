"""Make sure Keras runs on the TensorFlow backend before anything imports it.

keras-meta builds on `tf.data` and TensorFlow ops, so it needs Keras'
TensorFlow backend. If the user has not chosen a backend, this module
chooses TensorFlow; if the user chose another one explicitly (the
``KERAS_BACKEND`` variable, ``keras.json``, or Keras already imported with
another backend), it raises instead of overriding that choice silently.

Importing keras-meta changes nothing else: TensorFlow's oneDNN CPU kernels,
which make training about 2x faster on CPUs where TensorFlow leaves them off
(those without AVX-512 VNNI/BF16 or AMX), are the user's explicit choice,
``TF_ENABLE_ONEDNN_OPTS=1`` in the environment before TensorFlow loads
(README, "Backend and speed on CPUs"); :func:`onednn_enabled` says whether they are on.
"""

import json
import os
import sys

_FIX = (
    "keras-meta needs the TensorFlow backend of Keras. Set KERAS_BACKEND=tensorflow "
    "(or remove the other backend from ~/.keras/keras.json) before importing keras_meta."
)


def _configured_backend():
    """The backend named in the environment or in keras.json, or None."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"], "the KERAS_BACKEND environment variable"
    keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    config_path = os.path.join(keras_home, "keras.json")
    try:
        with open(config_path) as f:
            backend = json.load(f).get("backend")
    except (OSError, ValueError):
        return None, None
    return (backend, config_path) if backend else (None, None)


def onednn_enabled():
    """Whether TensorFlow runs its oneDNN CPU kernels (imports TensorFlow).

    >>> import keras_meta
    >>> isinstance(keras_meta.onednn_enabled(), bool)
    True
    """
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def ensure_tensorflow_backend():
    """Select the TensorFlow backend, or raise if the user picked another one."""
    if "keras" in sys.modules:
        import keras

        backend = keras.backend.backend()
        if backend != "tensorflow":
            raise ImportError(f"Keras is already running with the {backend!r} backend. {_FIX}")
        return
    backend, source = _configured_backend()
    if backend is None:
        os.environ["KERAS_BACKEND"] = "tensorflow"
    elif backend != "tensorflow":
        raise ImportError(f"{source} selects the {backend!r} Keras backend. {_FIX}")
