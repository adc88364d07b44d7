"""Backbones and heads for few-shot models."""

from keras_meta.models.backbones import conv4, mlp
from keras_meta.models.heads import PrototypeHead

__all__ = ["conv4", "mlp", "PrototypeHead"]
