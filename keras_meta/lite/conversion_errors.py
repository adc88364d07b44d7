"""Converter errors made readable: which TensorFlow ops have no TFLite kernel, and which layers use them.

Example:

>>> from keras_meta.lite import conversion_errors
>>> conversion_errors.unsupported_ops("... TF Select ops: Conv2DBackpropFilter, ReluGrad ...")
{'Conv2DBackpropFilter': [], 'ReluGrad': []}
"""

import re


class LiteConversionError(ValueError):
    """A model, or one of its layers, cannot be converted to a `.tflite` file."""


_LOCATION = re.compile(r'fused\["(\w+):", "([^"@]*)@')
_SELECT = re.compile(r"(?:TF Select ops|Custom ops): ([\w, ]+)")
_NEITHER = re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op")


def unsupported_ops(message):
    """`{op: [name scopes]}` of the TensorFlow ops a converter error message says it could not convert."""
    ops = {}
    for match in _SELECT.finditer(message):
        for op in match.group(1).split(","):
            if op.strip():
                ops.setdefault(op.strip(), [])
    for match in _NEITHER.finditer(message):
        ops.setdefault(match.group(1), [])
    for op, scope in _LOCATION.findall(message):
        if op in ops:
            ops[op].append(scope)
    return ops


def layers_of_scopes(model, scopes):
    """Names of the layers of `model` whose name scopes appear in `scopes` (deepest match per scope)."""
    if model is None:
        return []
    names = [layer.name for layer in model._flatten_layers(include_self=False)]
    found = []
    for scope in scopes:
        hit = None
        for part in scope.split("/"):
            for name in names:
                if re.fullmatch(re.escape(name) + r"(_\d+)?", part):
                    hit = name
        if hit and hit not in found:
            found.append(hit)
    return found


def conversion_error(error, model=None):
    """A `LiteConversionError` naming the unsupported ops and the layers that use them."""
    message = str(error)
    ops = unsupported_ops(message)
    if not ops:
        return LiteConversionError(f"TFLite conversion failed: {message[-2000:]}")
    parts = []
    for op, scopes in ops.items():
        layers = layers_of_scopes(model, scopes)
        where = f" (used by layer{'s' if len(layers) > 1 else ''} {', '.join(repr(n) for n in layers)})" if layers \
            else ""
        parts.append(f"{op}{where}")
    return LiteConversionError(
        "These TensorFlow ops have no TFLite builtin kernel: " + "; ".join(parts) + ". Replace the layers that use "
        "them, or convert with `allow_flex=True` (the file then needs an interpreter linked with the Flex delegate, "
        "e.g. org.tensorflow:tensorflow-lite-select-tf-ops on Android; the Python `ai_edge_litert` interpreter "
        "has none)."
    )
