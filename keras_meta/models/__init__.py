"""Backbones for few-shot models."""

from keras_meta.models.backbones import conv4, mlp

__all__ = ["conv4", "mlp"]
