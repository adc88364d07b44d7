"""Edge deployment: TFLite / LiteRT files of adapted models, prototype classifiers and on-device adaptation.

* `export_model(model, path, quantize=...)`: any Keras model, such as
  `learner.adapt(support_x, support_y)`, as a `.tflite` file;
* `export_prototype_classifier(protonet, path)`: one file with `embed`,
  `prototypes` and `classify` signatures: a device learns new classes from
  a support set at run time;
* `export_on_device_learner(maml, path)`: one file with `adapt`, `infer`,
  `save`, `restore` and `reset` signatures: K steps of SGD on the device with the
  meta-learned inner learning rates;
* quantization (`"dynamic"`, `"float16"`, `"int8"`) with calibration images
  drawn from episodes (`representative_images`), and `LiteModel`, the LiteRT
  interpreter called by signature.

See docs/deploying.md. Example:

>>> import numpy as np, keras_meta
>>> from keras_meta import lite
>>> model = keras_meta.models.mlp((4,), hidden_units=(8,), num_outputs=3)
>>> lite.LiteModel(lite.export_model(model, quantize="float16")).predict(np.ones((2, 4))).shape
(2, 3)
"""

from keras_meta.lite.conversion_errors import LiteConversionError
from keras_meta.lite.converter import convert_archive
from keras_meta.lite.export import export_model
from keras_meta.lite.interpreter import LiteModel
from keras_meta.lite.on_device import export_on_device_learner
from keras_meta.lite.on_device_state import restore_state, save_state
from keras_meta.lite.prototype_classifier import export_prototype_classifier
from keras_meta.lite.quantization_comparison import quantization_report
from keras_meta.lite.quantize import QUANTIZATIONS, agreement, representative_images

__all__ = [
    "QUANTIZATIONS",
    "LiteConversionError",
    "LiteModel",
    "agreement",
    "convert_archive",
    "export_model",
    "export_on_device_learner",
    "export_prototype_classifier",
    "quantization_report",
    "representative_images",
    "restore_state",
    "save_state",
]
