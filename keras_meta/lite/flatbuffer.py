"""What a `.tflite` file holds: the op types of each signature, and the ops of given layers.

Example:

>>> import keras_meta
>>> from keras_meta import lite
>>> from keras_meta.lite import flatbuffer
>>> content = lite.export_model(keras_meta.models.mlp((4,), hidden_units=(8,), num_outputs=3))
>>> sorted(flatbuffer.op_types(content)["serving_default"])
['FULLY_CONNECTED']
"""

import re


def nodes_of_layers(content, layer_names):
    """Names of the ops of a `.tflite` file that belong to the layers `layer_names` (by tensor name scopes).

    An op belongs to a layer when its output, or one of its constant inputs
    (the layer's weights), is named in that layer's scope.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    if not layer_names:
        return []
    patterns = [re.compile(re.escape(name) + r"(_\d+)?") for name in layer_names]

    def in_layer(name):
        parts = [part for piece in name.split(";") for part in piece.split("/")]
        return any(pattern.fullmatch(part) for pattern in patterns for part in parts)

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    nodes = []
    for subgraph in model.subgraphs:
        names = [t.name.decode() if isinstance(t.name, bytes) else t.name for t in subgraph.tensors]
        for op in subgraph.operators or []:
            inputs = [names[i] for i in op.inputs if i >= 0]
            outputs = [names[i] for i in op.outputs if i >= 0]
            if any(in_layer(name) for name in inputs + outputs):
                nodes += [name for name in outputs if name not in nodes]
    return nodes


def op_types(content):
    """`{signature: set of TFLite op type names}` of a `.tflite` file."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    names = {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    codes = [names.get(max(c.builtinCode, c.deprecatedBuiltinCode), "CUSTOM") for c in model.operatorCodes]
    result = {}
    for signature in model.signatureDefs or []:
        key = signature.signatureKey.decode() if isinstance(signature.signatureKey, bytes) else signature.signatureKey
        subgraph = model.subgraphs[signature.subgraphIndex]
        result[key] = {codes[op.opcodeIndex] for op in subgraph.operators or []}
    return result
