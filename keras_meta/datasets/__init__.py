"""Few-shot datasets: Omniglot, mini- and tiered-ImageNet, CIFAR-FS, FC100, CUB, any TFDS image dataset, sinusoids.

Each image loader returns an `ImageSet(images, labels, class_names)` of one
standard class split (Omniglot: `Omniglot(images, labels, alphabets)`); its
files are downloaded with a SHA-256 check where the licence allows, else the
error says what to fetch and where to put it (`files`).
"""

from keras_meta.datasets import (
    cifar100,
    cifar_fs,
    cub,
    fc100,
    files,
    image_sets,
    mini_imagenet,
    omniglot,
    sine,
    tfds_images,
    tiered_imagenet,
)
from keras_meta.datasets.image_sets import ImageSet

__all__ = [
    "ImageSet",
    "cifar100",
    "cifar_fs",
    "cub",
    "fc100",
    "files",
    "image_sets",
    "mini_imagenet",
    "omniglot",
    "sine",
    "tfds_images",
    "tiered_imagenet",
]
