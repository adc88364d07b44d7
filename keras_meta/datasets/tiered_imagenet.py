"""tiered-ImageNet (Ren et al. 2018): 608 ILSVRC-2012 classes, 351 / 97 / 160 from 20 / 6 / 8 super-categories.

The classes are grouped by 34 high-level WordNet categories, and the splits
are made of whole categories, so test classes are further from the training
classes than in mini-ImageNet. The class lists (WordNet ids, in the order of
Ren et al.'s `tiered_imagenet_split/{train,val,test}.csv`) ship with
keras-meta in `splits/tiered_imagenet/`, with each class's super-category
(`super_categories`) and WordNet description (`describe`).

The images cannot be downloaded automatically (ImageNet licence). Put Ren et
al.'s release, the files `{train,val,test}_images_png.pkl` (a pickled list
of PNG-encoded 84x84 images) and `{train,val,test}_labels.pkl` (a dict of
`"label_specific"`, the class number of each image, `"label_specific_str"`,
the name of each class number, `"label_general"` and `"label_general_str"`,
the same for super-categories), in `~/.keras/tiered_imagenet/` (or
`DATA_DIR/tiered_imagenet/` with `data_dir=DATA_DIR`). Pickles run code when
loaded: load only files from a source you trust.

The 779,165 images (448,695 / 124,261 / 206,209) take about 16 GB as
decoded uint8 84x84 pixels, four times that as float32, so `load` keeps them
encoded by default: `images` is then a 1-D object array of PNG bytes, and an
`EpisodeSampler` decodes only the images it draws::

    s = tiered_imagenet.load("train")
    sampler = EpisodeSampler(s.images, s.labels, ways=5, shots=1, queries=15,
                             decode=image_decoder(84, dtype="float32"))

which `tiered_imagenet.sampler("train", 5, 1, 15)` does in one call. The
sampler holds one copy of the split's encoded images in memory (about the
size of `<split>_images_png.pkl`; reading it never takes twice that).
`image_size` and
`dtype` are then arguments of the decoder (or of `sampler`), not of `load`.
`load(split, decoded=True)` decodes every image into memory instead.

Example:

>>> from keras_meta.datasets import tiered_imagenet
>>> [len(tiered_imagenet.classes(split)) for split in tiered_imagenet.SPLITS]
[351, 97, 160]
>>> [len(set(tiered_imagenet.super_categories(split))) for split in tiered_imagenet.SPLITS]
[20, 6, 8]
>>> tiered_imagenet.describe(tiered_imagenet.super_categories("val")[0])
'sporting dog, gun dog'
>>> sampler = tiered_imagenet.sampler("train", ways=5, shots=1, queries=15)  # doctest: +SKIP
>>> inputs, labels = next(iter(sampler.dataset(batch_size=4)))  # doctest: +SKIP
"""

import functools
import importlib.resources
import numbers
import os
import re

import keras
import numpy as np

from keras_meta.data import sources
from keras_meta.data.episodes import EpisodeSampler
from keras_meta.datasets import files, image_sets

DATASET = "tiered_imagenet"
NAME = "tiered-ImageNet"
SPLITS = ("train", "val", "test")
CHUNK = 4096  # images decoded per step of the progress bar
HOW_TO_GET = (
    "tiered-ImageNet cannot be downloaded automatically (ImageNet licence). Get the tiered-imagenet.tar "
    "release of Ren et al. 2018 (linked from github.com/renmengye/few-shot-ssl-public; the one learn2learn, "
    "torchmeta and MetaOptNet read) and extract train_images_png.pkl, train_labels.pkl, val_images_png.pkl, "
    "val_labels.pkl, test_images_png.pkl and test_labels.pkl from it."
)
_WNID = re.compile(r"^n\d{8}$")


def classes(split):
    """The WordNet ids of a split's classes, in label order (Ren et al.'s CSV order)."""
    return image_sets.split_classes(DATASET, image_sets.check_split(NAME, split, SPLITS))


def super_categories(split):
    """The super-category (a WordNet id) of each class of `split`, aligned with `classes(split)`.

    `describe(wnid)` names it; `load(split).labels` index this list.
    """
    table = _class_table()
    return [table[name][0] for name in classes(split)]


def describe(wnid):
    """The WordNet description of a tiered-ImageNet class or super-category, e.g. `'golden retriever'`."""
    descriptions = _descriptions()
    if wnid not in descriptions:
        raise ValueError(f"{wnid!r} is neither a tiered-ImageNet class nor one of its super-categories.")
    return descriptions[wnid]


@functools.cache
def _class_table():
    """`{class wnid: (category wnid, class description, category description)}` from the shipped classes.tsv."""
    resource = importlib.resources.files("keras_meta.datasets") / "splits" / DATASET / "classes.tsv"
    table = {}
    for line in resource.read_text(encoding="utf-8").splitlines():
        if line.strip():
            wnid, category, words, category_words = line.split("\t")
            table[wnid] = (category, words, category_words)
    return table


@functools.cache
def _descriptions():
    table = _class_table()
    return {**{table[w][0]: table[w][2] for w in table}, **{w: table[w][1] for w in table}}


def file_names(split):
    """The two files of Ren et al.'s release that hold `split`.

    >>> file_names("val")
    ['val_images_png.pkl', 'val_labels.pkl']
    """
    return [f"{split}_images_png.pkl", f"{split}_labels.pkl"]


def load(split, image_size=None, dtype=None, data_dir=None, decoded=False):
    """A tiered-ImageNet split as an `ImageSet` of encoded (default) or decoded images, labels, WordNet ids.

    Args:
        split: `"train"` (351 classes), `"val"` (97) or `"test"` (160).
        image_size: with `decoded=True`, side of the square images, or a
            `(height, width)` pair (default 84). Not allowed with
            `decoded=False`: pass it to the `image_decoder` of the
            `EpisodeSampler`, as `sampler` does.
        dtype: with `decoded=True`, `"float32"` (pixels in [0, 1], the
            default) or `"uint8"`. Not allowed with `decoded=False` (as
            `image_size`).
        data_dir: the folder that holds `tiered_imagenet/`; default
            `$KERAS_HOME`, else `~/.keras`.
        decoded: `False`: `images` is a 1-D object array of the PNG bytes of
            each image, for `EpisodeSampler(..., decode=image_decoder(...))`.
            `True`: `[N, H, W, 3]` pixels of `dtype`; the training split then
            needs about 9.5 GB (uint8 at 84x84) or 38 GB (float32).

    Raises:
        FileNotFoundError: the split's files are not in the folder (the
            message says what to fetch and where to put it).
        ValueError: the files do not hold the standard split's classes, or
            are not in the release's format; `image_size` or `dtype` given
            with `decoded=False`.
    """
    names = classes(split)
    size = sources.check_image_size(84 if image_size is None else image_size)
    image_sets.check_dtype("float32" if dtype is None else dtype)
    if not isinstance(decoded, (bool, np.bool_)):
        raise ValueError(f"`decoded` must be True or False, got {decoded!r}.")
    given = [f"{name}={value!r}" for name, value in (("image_size", image_size), ("dtype", dtype)) if value is not None]
    if given and not decoded:
        raise ValueError(
            f"`image_size` and `dtype` only apply with `decoded=True` (got {', '.join(given)}): encoded images "
            "are decoded when drawn, by `EpisodeSampler(..., decode=image_decoder(image_size, dtype=dtype))` (what "
            "`tiered_imagenet.sampler(..., image_size=, dtype=)` builds). Pass `decoded=True` to decode them all now."
        )
    folder = files.require(files.cache_folder(DATASET, data_dir), file_names(split), NAME, HOW_TO_GET)
    images_path, labels_path = (os.path.join(folder, name) for name in file_names(split))
    file_labels, label_names = _read_labels(labels_path)
    encoded = _read_images(images_path)
    if len(encoded) != len(file_labels):
        raise ValueError(
            f"{images_path} holds {len(encoded)} images but {labels_path} labels {len(file_labels)}: the two "
            "files do not belong together (or one is incomplete)."
        )
    labels = _standard_labels(file_labels, label_names, names, split, labels_path)
    if not decoded:
        return image_sets.ImageSet(encoded, labels, list(names))
    return image_sets.ImageSet(_decode(encoded, size, dtype or "float32", images_path), labels, list(names))


def sampler(split, ways, shots, queries, image_size=84, dtype="float32", data_dir=None, **kwargs):
    """An `EpisodeSampler` over a split's encoded images that decodes only the images it draws.

    `kwargs` go to `EpisodeSampler` (`seed`, `classes`, `rotations`, ...);
    `sampler.class_names[label]` is the WordNet id of each label. The sampler
    holds the split's encoded images (about the size of its
    `<split>_images_png.pkl`) in memory.

    >>> episodes = sampler("val", ways=5, shots=1, queries=15, image_size=84, seed=0)  # doctest: +SKIP
    >>> inputs, labels = next(iter(episodes.dataset(batch_size=4)))  # doctest: +SKIP
    >>> inputs["support_x"].shape, episodes.class_names[0]  # doctest: +SKIP
    (TensorShape([4, 5, 84, 84, 3]), 'n02085620')
    """
    size = sources.check_image_size(image_size)
    image_sets.check_dtype(dtype)
    images, labels, class_names = load(split, data_dir=data_dir)
    episodes = EpisodeSampler(
        images, labels, ways, shots, queries, decode=image_sets.image_decoder(size, dtype=dtype), **kwargs)
    episodes.class_names = class_names
    return episodes


def _read_labels(path):
    """`(class number of each image, name of each class number)` from a `<split>_labels.pkl`."""
    data = files.unpickle(path)
    keys = ("label_specific", "label_specific_str")
    if isinstance(data, dict):
        data = {files.text(key): value for key, value in data.items()}
    if not isinstance(data, dict) or not all(key in data for key in keys):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(
            f"{path} is not a tiered-ImageNet labels file: it must be a dict with keys {list(keys)} (and "
            f"label_general, label_general_str), found {found}."
        )
    labels = np.asarray(data["label_specific"])
    if labels.ndim != 1 or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(f"{path}: label_specific must be one integer per image, got {labels.dtype} {labels.shape}.")
    names = data["label_specific_str"]
    if isinstance(names, dict):  # {number: name}
        bad = [key for key in names if not isinstance(key, numbers.Integral) or isinstance(key, bool) or key < 0]
        if bad:
            raise ValueError(
                f"{path}: label_specific_str must map class numbers (integers >= 0) to class names, but it has the "
                f"keys {bad[:3]}: the file is not tiered-ImageNet's."
            )
        names = [names.get(number) for number in range(int(max(names)) + 1)] if names else []
    elif not isinstance(names, (list, tuple, np.ndarray)):
        raise ValueError(
            f"{path}: label_specific_str must be a list of class names (or a dict of them by class number), "
            f"found {type(names).__name__}."
        )
    return labels.astype(np.int64), [None if name is None else files.text(name) for name in names]


def _read_images(path):
    """A 1-D object array of the encoded bytes of each image of a `<split>_images_png.pkl`."""
    data = files.unpickle(path)
    if not isinstance(data, (list, tuple, np.ndarray)):
        raise ValueError(
            f"{path} is not a tiered-ImageNet images file: it must hold a list of PNG-encoded images, found "
            f"{type(data).__name__}."
        )
    return _encoded_bytes(data, path)


def _encoded_bytes(data, path):
    """A 1-D object array of the bytes of each item of `data`, releasing each item of a list once copied.

    The pickled arrays and their bytes copies are never all alive together:
    the peak is one copy of the images, not two.
    """
    if not (isinstance(data, list) or isinstance(data, np.ndarray) and data.dtype == object and data.ndim == 1):
        data = list(data)  # a tuple (or an array of another kind): a list of the same items, which can be released
    encoded = np.empty(len(data), dtype=object)
    for i in range(len(data)):
        item, data[i] = data[i], None
        if isinstance(item, np.ndarray):  # cv2.imencode output, as in Ren et al.'s release
            encoded[i] = item.tobytes()
        elif isinstance(item, bytes):
            encoded[i] = item
        elif isinstance(item, str):  # a Python 2 byte string read as latin-1
            encoded[i] = item.encode("latin1")
        else:
            raise ValueError(f"{path}: image {i} is a {type(item).__name__}, not encoded image bytes.")
    return encoded


def _normalized(text):
    return " ".join(text.lower().replace("_", " ").split())


def _standard_labels(file_labels, label_names, names, split, path):
    """Each image's label in the shipped class order, from the file's class numbers and class names.

    A file names its classes by WordNet id or by WordNet description (Ren et
    al.'s script wrote ImageNet's class names); both are matched against the
    shipped list. Anything else is not the standard split.
    """
    table = _class_table()
    by_description = {_normalized(table[wnid][1]): wnid for wnid in names}
    standard = set(names)
    mapped, unknown = [], []
    for name in label_names:
        text = "" if name is None else name.strip()
        wnid = text if _WNID.match(text) else by_description.get(_normalized(text))
        if wnid not in standard:
            unknown.append(text)
        mapped.append(wnid)
    used = sorted(set(file_labels.tolist()))
    if used and (used[0] < 0 or used[-1] >= len(mapped)):
        raise ValueError(
            f"{path}: label_specific holds class numbers up to {used[-1]} but label_specific_str names only "
            f"{len(mapped)} classes: the file is incomplete or not tiered-ImageNet's."
        )
    found = {mapped[number] for number in used}
    missing = sorted(standard - found)
    repeated = len(used) != len(found)
    if unknown or missing or repeated:
        details = []
        if unknown:
            details.append(f"{len(unknown)} class(es) outside the split, e.g. {unknown[:3]}")
        if missing:
            details.append(f"{len(missing)} class(es) of the split without images, e.g. {missing[:3]}")
        if repeated:
            details.append("several class numbers name the same class")
        raise ValueError(
            f"{path} does not hold Ren et al.'s standard tiered-ImageNet {split!r} split ({'; '.join(details)}): "
            f"these files are not the standard split. Use the published {split} files, unmodified."
        )
    order = {wnid: label for label, wnid in enumerate(names)}
    remap = np.array([order.get(wnid, -1) for wnid in mapped], dtype=np.int64)
    return remap[file_labels]


def _decode(encoded, size, dtype, path):
    """All `encoded` images decoded to `[N, H, W, 3]` of `dtype`, chunk by chunk, with a progress bar."""
    decode = image_sets.image_decoder(size, channels=3, dtype=dtype)
    images = np.empty((len(encoded),) + tuple(size) + (3,), dtype=dtype)
    progress = keras.utils.Progbar(len(encoded), unit_name="image")
    for start in range(0, len(encoded), CHUNK):
        part = list(encoded[start:start + CHUNK])
        names = [f"image {i}" for i in range(start, start + len(part))]
        images[start:start + len(part)] = sources.decode_all(part, decode, files=names, path=path)
        progress.add(len(part))
    return images
