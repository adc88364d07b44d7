"""Backbones for few-shot models, and the layers they use."""

from keras_meta.models.backbones import conv4, mlp, resnet12, wrn28_10
from keras_meta.models.layers import DropBlock, SupportClassLogits

__all__ = ["DropBlock", "SupportClassLogits", "conv4", "mlp", "resnet12", "wrn28_10"]
