"""CIFAR-FS (Bertinetto et al. 2019, "Meta-learning with differentiable closed-form solvers"): few-shot CIFAR-100.

The 100 CIFAR-100 classes are split at random into 64 training, 16
validation and 20 test classes, each with all its 600 images (CIFAR-100's
train and test sets merged), 32x32 RGB. The class lists ship with keras-meta
in `splits/cifar_fs/{train,val,test}.txt`: the lists of the R2D2 code
release (`bertinetto/r2d2`, as copied by torchmeta and learn2learn). The images
come from the official CIFAR-100 archive, downloaded once by
`keras_meta.datasets.cifar100` into `~/.keras/cifar100/` (or
`data_dir/cifar100/`).

Example:

>>> from keras_meta.datasets import cifar_fs
>>> len(cifar_fs.classes("train")), len(cifar_fs.classes("val")), len(cifar_fs.classes("test"))
(64, 16, 20)
>>> images, labels, class_names = cifar_fs.load("test")  # doctest: +SKIP
>>> images.shape, images.dtype, class_names[labels[0]]  # doctest: +SKIP
((12000, 32, 32, 3), dtype('float32'), 'baby')
"""

from keras_meta.datasets import cifar100, image_sets

SPLITS = ("train", "val", "test")


def classes(split):
    """The CIFAR-100 class names of a CIFAR-FS split, in label order."""
    return image_sets.split_classes("cifar_fs", image_sets.check_split("CIFAR-FS", split, SPLITS))


def load(split, dtype="float32", data_dir=None):
    """A CIFAR-FS split as an `ImageSet`: `[N, 32, 32, 3]` images, labels `0..C-1`, CIFAR-100 class names.

    Args:
        split: `"train"` (64 classes), `"val"` (16) or `"test"` (20); 600
            images per class.
        dtype: `"float32"` (pixels in [0, 1]) or `"uint8"` (the stored pixels).
        data_dir: the folder that holds (or will hold) `cifar100/cifar-100-python.tar.gz`;
            default `$KERAS_HOME`, else `~/.keras`.
    """
    names = classes(split)
    image_sets.check_dtype(dtype)
    data = cifar100.load_all(data_dir)
    return image_sets.labelled(data.images, data.fine_names, names, dtype)
