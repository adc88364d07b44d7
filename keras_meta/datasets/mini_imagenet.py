"""mini-ImageNet (Vinyals et al. 2016) in the split of Ravi & Larochelle (ICLR 2017): 64 / 16 / 20 classes.

100 ILSVRC-2012 classes with 600 images each, split into 64 training, 16
validation and 20 test classes. The class lists (WordNet ids, in the order of
Ravi & Larochelle's `train.csv` / `val.csv` / `test.csv`) ship with keras-meta
in `splits/mini_imagenet/{train,val,test}.txt`; label `i` is class
`class_names[i]` of that list.

The images cannot be downloaded automatically (ImageNet licence). Put the
files of one of these layouts in `~/.keras/mini_imagenet/` (or
`DATA_DIR/mini_imagenet/` with `data_dir=DATA_DIR`); `load` finds which:

1. Ravi & Larochelle's `train.csv`, `val.csv`, `test.csv` (header
   `filename,label`, rows such as `n0153282900000005.jpg,n01532829`) and an
   `images/` folder of those files, as made by their script or by
   `mini-imagenet-tools` from the ILSVRC-2012 training images. Images of any
   size are resized to `image_size`.
2. The pickles `mini-imagenet-cache-{train,val,test}.pkl` (a dict of
   `"image_data"`, uint8 `[N, 84, 84, 3]`, and `"class_dict"`, `{wnid:
   [indices]}`), as used by learn2learn and Ren et al.'s release.
3. MetaOptNet's (Lee et al. 2019) `miniImageNet_category_split_train_phase_train.pickle`,
   `miniImageNet_category_split_val.pickle` and
   `miniImageNet_category_split_test.pickle` (`"data"`, uint8 `[N, 84, 84, 3]`;
   `"labels"`, global class numbers; `"catname2label"`, `{wnid: number}`,
   which names each number's class).

Pickles run code when loaded: load only files from a source you trust.
Files whose classes differ from the standard split raise `ValueError`.

Example:

>>> from keras_meta.datasets import mini_imagenet
>>> [len(mini_imagenet.classes(split)) for split in mini_imagenet.SPLITS]
[64, 16, 20]
>>> mini_imagenet.classes("test")[0]
'n01930112'
>>> images, labels, class_names = mini_imagenet.load("test")  # doctest: +SKIP
>>> images.shape, images.dtype  # doctest: +SKIP
((12000, 84, 84, 3), dtype('float32'))
"""

import csv
import os

import keras
import numpy as np

from keras_meta.data import sources
from keras_meta.datasets import files, image_sets

DATASET = "mini_imagenet"
NAME = "mini-ImageNet"
SPLITS = ("train", "val", "test")
STORED_SIZE = (84, 84)
CHUNK = 2048  # images decoded (or resized) per step of the progress bar
METAOPTNET_FILES = {
    "train": "miniImageNet_category_split_train_phase_train.pickle",
    "val": "miniImageNet_category_split_val.pickle",
    "test": "miniImageNet_category_split_test.pickle",
}
HOW_TO_GET = (
    "mini-ImageNet cannot be downloaded automatically (ImageNet licence). Get either Ravi & Larochelle's "
    "split files train.csv, val.csv, test.csv (github.com/twitter/meta-learning-lstm, data/miniImagenet) with "
    "an images/ folder of the listed JPEGs cut from the ILSVRC-2012 training images (e.g. with "
    "github.com/yaoyao-liu/mini-imagenet-tools), or the published pickles mini-imagenet-cache-train.pkl, "
    "mini-imagenet-cache-val.pkl, mini-imagenet-cache-test.pkl (the ones learn2learn reads), or MetaOptNet's "
    "miniImageNet_category_split_{train_phase_train,val,test}.pickle."
)


def classes(split):
    """The WordNet ids of a split's classes, in label order (Ravi & Larochelle's CSV order)."""
    return image_sets.split_classes(DATASET, image_sets.check_split(NAME, split, SPLITS))


def layouts(split):
    """The file layouts `load` accepts for `split`, in the order it looks for them.

    >>> layouts("val")
    [['val.csv', 'images'], ['mini-imagenet-cache-val.pkl'], ['miniImageNet_category_split_val.pickle']]
    """
    return [
        [f"{split}.csv", "images"],
        [f"mini-imagenet-cache-{split}.pkl"],
        [METAOPTNET_FILES[split]],
    ]


def load(split, image_size=84, dtype="float32", data_dir=None):
    """A mini-ImageNet split as an `ImageSet`: `[N, H, W, 3]` images, labels `0..C-1`, WordNet ids.

    Args:
        split: `"train"` (64 classes), `"val"` (16) or `"test"` (20).
        image_size: side of the square output images, or a `(height, width)`
            pair; 84 keeps the pickles' pixels as stored.
        dtype: `"float32"` (pixels in [0, 1]) or `"uint8"`.
        data_dir: the folder that holds `mini_imagenet/`; default
            `$KERAS_HOME`, else `~/.keras`.

    Raises:
        FileNotFoundError: no layout's files are in the folder (the message
            says what to fetch and where to put it).
        ValueError: the files do not hold the standard split's classes, are
            not in the expected format, or are incomplete (images listed
            in a CSV file but absent, images of no class).
    """
    names = classes(split)
    size = sources.check_image_size(image_size)
    image_sets.check_dtype(dtype)
    folder = files.cache_folder(DATASET, data_dir)
    layout = files.find_first(folder, layouts(split))
    if layout is None:  # None of the layouts is complete: name the CSV layout's missing files.
        files.require(folder, layouts(split)[0], NAME, HOW_TO_GET)
    path = os.path.join(folder, layout[0])
    if layout[0].endswith(".csv"):
        return _load_csv(path, os.path.join(folder, "images"), split, names, size, dtype)
    data = files.unpickle(path)
    if layout[0].startswith("mini-imagenet-cache"):
        images, image_classes = _from_cache_pickle(data, path)
    else:
        images, image_classes = _from_metaoptnet_pickle(data, path)
    _check_classes(set(image_classes.tolist()), names, split, path)
    return image_sets.labelled(_resized(images, size), image_classes, names, dtype)


def _load_csv(path, image_folder, split, names, size, dtype):
    with open(path, newline="") as f:
        rows = [row for row in csv.reader(f) if row]
    if not rows or [cell.strip() for cell in rows[0]] != ["filename", "label"] or any(len(r) != 2 for r in rows):
        raise ValueError(
            f"{path} is not one of Ravi & Larochelle's split files: it must start with the header "
            "`filename,label` and list one `image file,WordNet id` pair per row."
        )
    filenames = [row[0].strip() for row in rows[1:]]
    image_classes = np.array([row[1].strip() for row in rows[1:]], dtype=object)
    _check_classes(set(image_classes.tolist()), names, split, path)
    missing = [name for name in filenames if not os.path.isfile(os.path.join(image_folder, name))]
    if missing:  # A ValueError, not FileNotFoundError: the dataset is there, but the files are incomplete.
        raise ValueError(
            f"{NAME}: {len(missing)} of the {len(filenames)} images that {os.path.basename(path)} lists are not in "
            f"{image_folder}, e.g. {missing[:3]}: the files are incomplete. Put all the images of the split there "
            "(file names as in the CSV)."
        )
    paths = [os.path.join(image_folder, name) for name in filenames]
    decode = image_sets.image_decoder(size, channels=3, dtype="uint8", from_files=True)
    progress = keras.utils.Progbar(len(paths), unit_name="image") if len(paths) > CHUNK else None
    images = np.empty((len(paths), *size, 3), np.uint8)
    for start in range(0, len(paths), CHUNK):
        end = min(start + CHUNK, len(paths))
        images[start:end] = sources.decode_all(
            paths[start:end], decode, files=filenames[start:end], path=image_folder)
        if progress is not None:
            progress.add(end - start)
    return image_sets.labelled(images, image_classes, names, dtype)


def _entries(data, path, keys, what):
    """`data[key]` for each of `keys` (str or bytes keys), or a `ValueError` saying the file is not `what`."""
    if isinstance(data, dict):
        data = {files.text(key): value for key, value in data.items()}
        if all(key in data for key in keys):
            return [data[key] for key in keys]
    found = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
    raise ValueError(f"{path} is not {what}: it must be a dict with keys {list(keys)}, found {found}.")


def _checked_images(images, path):
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"{path}: the images must be uint8 [N, height, width, 3], got {images.dtype} {images.shape}."
        )
    return images


def _from_cache_pickle(data, path):
    """`(images, class of each image)` of a `mini-imagenet-cache-<split>.pkl` dict."""
    images, class_dict = _entries(data, path, ("image_data", "class_dict"), "a mini-imagenet-cache pickle")
    images = _checked_images(images, path)
    image_classes = np.full(len(images), None, dtype=object)
    for name, indices in class_dict.items():
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(images)):
            raise ValueError(
                f"{path}: class_dict[{files.text(name)!r}] indexes images beyond the {len(images)} stored.")
        image_classes[indices] = files.text(name)
    unlabelled = sum(name is None for name in image_classes)
    if unlabelled:
        raise ValueError(
            f"{path}: {unlabelled} of the {len(images)} images are in no class of class_dict: the file is "
            "incomplete or not a mini-imagenet-cache pickle."
        )
    return images, image_classes


def _from_metaoptnet_pickle(data, path):
    """`(images, class of each image)` of a MetaOptNet `miniImageNet_category_split_*.pickle` dict."""
    images, labels, catname2label = _entries(
        data, path, ("data", "labels", "catname2label"), "a MetaOptNet miniImageNet pickle")
    images = _checked_images(images, path)
    labels = np.asarray(labels)
    if labels.shape != (len(images),):
        raise ValueError(f"{path}: {len(images)} images but labels of shape {labels.shape}.")
    class_of = {int(number): files.text(name) for name, number in catname2label.items()}
    unnamed = sorted(set(labels.tolist()) - set(class_of))
    if unnamed:
        raise ValueError(
            f"{path}: labels {unnamed[:5]} have no class in catname2label; the file is incomplete or not "
            "MetaOptNet's."
        )
    return images, np.array([class_of[int(label)] for label in labels], dtype=object)


def _check_classes(found, names, split, path):
    """`ValueError` unless the classes in a file are exactly those of the standard split."""
    extra, missing = sorted(found - set(names)), sorted(set(names) - found)
    if extra or missing:
        details = []
        if extra:
            details.append(f"{len(extra)} class(es) outside the split, e.g. {extra[:3]}")
        if missing:
            details.append(f"{len(missing)} class(es) of the split missing, e.g. {missing[:3]}")
        raise ValueError(
            f"{path} does not hold Ravi & Larochelle's standard mini-ImageNet {split!r} split "
            f"({'; '.join(details)}): these files are not the standard split. Use the published "
            f"{split} files, unmodified."
        )


def _resized(images, size):
    """uint8 `images` resized to `size` (antialiased bilinear) when they are not that size already."""
    if tuple(images.shape[1:3]) == tuple(size):
        return images
    progress = keras.utils.Progbar(len(images), unit_name="image") if len(images) > CHUNK else None
    out = np.empty((len(images), *size, images.shape[-1]), np.uint8)
    for start in range(0, len(images), CHUNK):
        end = min(start + CHUNK, len(images))
        out[start:end] = image_sets.resized_uint8(images[start:end], size).numpy()
        if progress is not None:
            progress.add(end - start)
    return out
