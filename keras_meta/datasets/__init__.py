"""Few-shot datasets: Omniglot and sinusoid regression tasks."""

from keras_meta.datasets import omniglot, sine

__all__ = ["omniglot", "sine"]
