"""Any TensorFlow Datasets (TFDS) image classification dataset as a few-shot source.

`load(name, split)` reads a prepared TFDS dataset into memory as an
`ImageSet(images, labels, class_names)` (see `image_sets`): uint8 pixels or
float32 in [0, 1], the dataset's integer labels, and the names of its classes
from `info.features["label"].names` (some datasets only name their classes
once prepared, e.g. `cifar100`; some never do: `caltech_birds2011` labels are
named `"0"`..`"199"`). `image_size=` resizes (channels are kept:
grayscale stays `[H, W, 1]`); datasets whose images differ in size need it.
`classes=` keeps a subset of the classes, renumbered `0..len(classes)-1` in
the order given: that is how to make your own class splits (meta-train,
meta-validation, meta-test classes) from one labelled split.

Nothing is downloaded unless `download=True`: a dataset that is not prepared
in `data_dir` raises `FileNotFoundError` saying how to prepare it
(`tfds build NAME --data_dir=DIR`). A split larger than `max_examples` raises
instead of filling the memory (or being cut short silently).

Meta-Dataset (Triantafillou et al. 2020) sources that the installed TFDS
provides as image classification datasets, by their Meta-Dataset names, are in
`META_DATASET_SOURCES` (ILSVRC-2012, Omniglot, CUB-200-2011, DTD, QuickDraw,
VGG Flower). TFDS has no Aircraft, Fungi or Traffic Signs dataset, and its
`coco` is a detection dataset (Meta-Dataset uses crops of its boxes), so
those four sources are not available this way. `imagenet2012` must be
downloaded by hand (see its TFDS page).

Example:

>>> from keras_meta.datasets import tfds_images
>>> tfds_images.META_DATASET_SOURCES["cu_birds"]
'caltech_birds2011'
>>> flowers = tfds_images.load("oxford_flowers102", "test", image_size=84, dtype="uint8")  # doctest: +SKIP
>>> flowers.images.shape, flowers.class_names[0]  # doctest: +SKIP
((6149, 84, 84, 3), 'pink primrose')
>>> # Your own class split: the first 70 flower classes to meta-train on.
>>> train = tfds_images.load("oxford_flowers102", "test", image_size=84, dtype="uint8",
...                          classes=range(70))  # doctest: +SKIP
>>> from keras_meta.data import EpisodeSampler
>>> sampler = EpisodeSampler(train.images, train.labels, ways=5, shots=1, queries=15)  # doctest: +SKIP
"""

import numbers

import keras
import numpy as np
import tensorflow as tf

from keras_meta.data import sources
from keras_meta.datasets import image_sets

# Meta-Dataset source name -> TFDS dataset name, for the sources TFDS has (checked against `tfds.list_builders()`).
META_DATASET_SOURCES = {
    "ilsvrc_2012": "imagenet2012",
    "omniglot": "omniglot",
    "cu_birds": "caltech_birds2011",
    "dtd": "dtd",
    "quickdraw": "quickdraw_bitmap",
    "vgg_flower": "oxford_flowers102",
}
# The extra sources of Requeima et al. (2019, CNAPs), often evaluated with Meta-Dataset.
EXTRA_META_DATASET_SOURCES = {"mnist": "mnist", "cifar10": "cifar10", "cifar100": "cifar100"}

_BATCH_SIZE = 256


def load(
    name,
    split,
    image_size=None,
    dtype="float32",
    classes=None,
    image_key="image",
    label_key="label",
    data_dir=None,
    download=False,
    max_examples=200_000,
    builder_kwargs=None,
    download_and_prepare_kwargs=None,
    verbose=1,
):
    """Loads a split of a TFDS image classification dataset as `ImageSet(images, labels, class_names)`.

    Args:
        name: a TFDS dataset name (`"caltech_birds2011"`, `"omniglot"`,
            `"cifar100:3.0.2"`) or a `tfds.core.DatasetBuilder` (then
            `data_dir` and `builder_kwargs` must be left out).
        split: a TFDS split, slices included (`"train"`, `"test[:50%]"`,
            `"train+test"`).
        image_size: side of the square output images or a `(height, width)`
            pair; `None` keeps the stored size (then all images must have one
            size). Channels are kept.
        dtype: `"float32"` (pixels in [0, 1]) or `"uint8"` (stored pixels, 4x
            less memory).
        classes: keep only these classes, given as class names or integer
            labels of the dataset; they are relabelled `0..len(classes)-1` in
            this order and `class_names` lists them. Default: every class, with
            the dataset's own labels, and `class_names` all its class names.
        image_key, label_key: the image and the `ClassLabel` features of an
            example (`label_key="coarse_label"` for CIFAR-100's 20
            superclasses, `"alphabet"` for Omniglot's alphabets).
        data_dir: TFDS data folder (default TFDS's, `~/tensorflow_datasets`).
        download: download and prepare the dataset if needed. By default
            nothing is downloaded: an unprepared dataset raises.
        max_examples: the most examples to read; more raise `ValueError`
            (`None`: no limit).
        builder_kwargs: passed to `tfds.builder` (`config=`, `version=`, ...).
        download_and_prepare_kwargs: passed to `builder.download_and_prepare`
            when `download=True` (`download_config=` for manual downloads).
        verbose: 1 shows a progress bar while reading, 0 does not.

    Raises:
        FileNotFoundError: the dataset is not prepared and `download=False`.
        ValueError: unknown features or classes, images of several sizes
            without `image_size`, or more than `max_examples` examples.
    """
    tfds = _tfds()

    image_sets.check_dtype(dtype)
    size = None if image_size is None else sources.check_image_size(image_size)
    if max_examples is not None and (
        not isinstance(max_examples, numbers.Integral) or isinstance(max_examples, bool) or max_examples < 1
    ):
        raise ValueError(f"`max_examples` must be a positive int or None, got {max_examples!r}.")
    if verbose not in (0, 1):
        raise ValueError(f"`verbose` must be 0 or 1, got {verbose!r}.")

    if isinstance(name, tfds.core.DatasetBuilder):
        if data_dir is not None or builder_kwargs:
            raise ValueError("Pass `data_dir` and `builder_kwargs` to `tfds.builder`, not with a builder.")
        builder = name
    else:
        builder = tfds.builder(name, data_dir=data_dir, **(builder_kwargs or {}))
    features = builder.info.features
    image_feature, label_feature = _check_features(builder.name, features, image_key, label_key)
    names = list(label_feature.names)
    keep = None if classes is None else _class_ids(classes, names, label_key)

    if download:
        builder.download_and_prepare(**(download_and_prepare_kwargs or {}))
    skip_decoding = keep is not None and isinstance(image_feature, tfds.features.Image)
    decoders = {image_key: tfds.decode.SkipDecoding()} if skip_decoding else None
    try:
        dataset = builder.as_dataset(split=split, decoders=decoders, shuffle_files=False)
    except AssertionError as error:
        if "could not find data" not in str(error):
            raise
        root = builder.data_dir_root if hasattr(builder, "data_dir_root") else data_dir
        raise FileNotFoundError(
            f"TFDS dataset {builder.name!r} is not prepared in {root}. Prepare it once with "
            f"`tfds build {builder.name} --data_dir={root}` (command line), or pass `download=True` to download "
            "and prepare it now. Datasets with manual downloads (imagenet2012) also need their files in "
            f"{root}/downloads/manual; see https://www.tensorflow.org/datasets/catalog/{builder.name}."
        ) from None

    total = int(dataset.cardinality())
    total = total if total >= 0 else None
    if keep is None and total is not None and max_examples is not None and total > max_examples:
        raise ValueError(_too_many(builder.name, split, max_examples, size, image_feature, total=total))

    dataset = dataset.map(lambda example: (example[image_key], example[label_key]))
    class_names = names
    if keep is not None:
        remap = np.full(len(names), -1, np.int64)
        remap[keep] = np.arange(len(keep))
        remap = tf.constant(remap)
        dataset = dataset.map(lambda image, label: (image, tf.gather(remap, label)))
        dataset = dataset.filter(lambda image, label: label >= 0)
        class_names = [names[i] for i in keep]
    if skip_decoding:
        dataset = dataset.map(lambda image, label: (image_feature.decode_example(image), label),
                              num_parallel_calls=tf.data.AUTOTUNE)
    if size is not None:
        dataset = dataset.map(lambda image, label: (image_sets.resized_uint8(image, size), label),
                              num_parallel_calls=tf.data.AUTOTUNE)
    batched = size is not None or image_feature.shape is not None and None not in image_feature.shape
    if batched:
        dataset = dataset.batch(_BATCH_SIZE)
    target = total if keep is None else None  # how many examples the classes have is known once read
    images, labels = _read(dataset, batched, target, max_examples, verbose,
                           lambda: _too_many(builder.name, split, max_examples, size, image_feature,
                                             filtered=keep is not None), dtype)
    if keep is not None:
        missing = sorted(set(range(len(keep))) - set(np.unique(labels).tolist()))
        if missing:
            raise ValueError(
                f"{len(missing)} class(es) of `classes` have no example in {builder.name} split {split!r}, e.g. "
                f"{[class_names[i] for i in missing[:5]]}. Choose classes present in the split."
            )
    return image_sets.ImageSet(images, labels.astype(np.int64), class_names)


def _tfds():
    """The `tensorflow_datasets` module, or an `ImportError` naming the extra that installs it."""
    try:
        import tensorflow_datasets
    except ImportError:
        raise ImportError('keras_meta.datasets.tfds_images needs tensorflow-datasets: install it with '
                          '`pip install "keras-meta[tfds]"`.') from None
    return tensorflow_datasets


def _check_features(dataset, features, image_key, label_key):
    """The image and `ClassLabel` features, or a `ValueError` listing the example's features."""
    tfds = _tfds()

    keys = sorted(features.keys()) if hasattr(features, "keys") else []
    for key, what in ((image_key, "image"), (label_key, "label")):
        if key not in keys:
            raise ValueError(
                f"{dataset} examples have no {key!r} feature; they have {keys}. Name the {what} feature with "
                f"`{what}_key=`."
            )
    if not isinstance(features[label_key], tfds.features.ClassLabel):
        labels = [k for k in keys if isinstance(features[k], tfds.features.ClassLabel)]
        raise ValueError(
            f"{dataset} feature {label_key!r} is not a class label ({type(features[label_key]).__name__}); its class "
            f"label features are {labels}. Pass one as `label_key=`."
        )
    shape = features[image_key].shape
    if shape is None or len(shape) != 3:
        raise ValueError(f"{dataset} feature {image_key!r} is not an image [H, W, C] (shape {shape}).")
    dtype = tf.as_dtype(features[image_key].dtype)
    if dtype != tf.uint8:
        raise ValueError(f"{dataset} feature {image_key!r} holds {dtype.name} pixels; only uint8 images are supported.")
    return features[image_key], features[label_key]


def _class_ids(classes, names, label_key):
    """The dataset labels of `classes` (class names or integer labels), in the order given."""
    if isinstance(classes, (str, bytes)):
        classes = [classes]
    classes = list(classes)
    if not classes:
        raise ValueError("`classes` is empty: name at least one class.")
    index = {name: i for i, name in enumerate(names)}
    ids, unknown = [], []
    for value in classes:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool) and 0 <= value < len(names):
            ids.append(int(value))
        elif isinstance(value, str) and value in index:
            ids.append(index[value])
        else:
            unknown.append(value)
    if unknown:
        raise ValueError(
            f"`classes` names {len(unknown)} class(es) the {label_key!r} feature does not have, e.g. {unknown[:5]}: "
            f"use its class names (e.g. {names[:3]}) or labels 0..{len(names) - 1}."
        )
    if len(set(ids)) != len(ids):
        repeated = sorted({names[i] for i in ids if ids.count(i) > 1})
        raise ValueError(f"`classes` names some classes more than once: {repeated[:5]}.")
    return np.array(ids, np.int64)


def _read(dataset, batched, total, max_examples, verbose, too_many, dtype):
    """Reads `(image, label)` pairs into `(images of dtype, labels)` with a progress bar.

    More than `max_examples` raise. With `total` known, the images go straight
    into one array of `dtype`; otherwise the stored chunks are kept until the
    count is known, then moved one by one into that array.
    """
    progress = keras.utils.Progbar(total, verbose=verbose, unit_name="example") if verbose else None
    filled, chunks, labels, count, first = None, [], [], 0, None
    for image, label in dataset.as_numpy_iterator():
        if not batched:
            if first is None:
                first = image.shape
            elif image.shape != first:
                raise ValueError(
                    f"The images differ in size ({first} and {image.shape}): pass `image_size=` to resize them "
                    "to one size."
                )
            image, label = image[None], np.reshape(label, [1])
        if max_examples is not None and count + len(label) > max_examples:
            raise ValueError(too_many())
        if filled is None and total is not None:
            filled = np.empty((total, *image.shape[1:]), dtype)
        if filled is not None and not chunks and count + len(label) <= len(filled):
            filled[count:count + len(label)] = image_sets.converted(image, dtype)
        else:  # the size is not known (or was wrong): kept as stored until it is
            chunks.append(image)
        labels.append(label)
        count += len(label)
        if progress is not None:
            progress.update(count)
    if progress is not None and total is None:
        progress.update(count, finalize=True)
    if not labels:
        raise ValueError("The split holds no example (of the chosen classes).")
    return _assembled(filled, chunks, count, dtype), np.concatenate(labels)


def _assembled(filled, chunks, count, dtype):
    """The `count` images of `filled` (already `dtype`) followed by the stored `chunks`, as one array of `dtype`."""
    done = 0 if filled is None else count - sum(len(chunk) for chunk in chunks)
    if not chunks:
        return filled if done == len(filled) else filled[:done].copy()
    images = np.empty((count, *chunks[0].shape[1:]), dtype)
    if done:
        images[:done] = filled[:done]
    del filled
    chunks.reverse()
    while chunks:  # each chunk released once copied: the stored pixels and the result are never both whole
        chunk = chunks.pop()
        images[done:done + len(chunk)] = image_sets.converted(chunk, dtype)
        done += len(chunk)
    return images


def _too_many(dataset, split, max_examples, size, image_feature, total=None, filtered=False):
    """The message for a split larger than `max_examples`, with what it would take and how to read less."""
    if total is not None:
        what = f"has {total} examples, more than max_examples={max_examples}"
        shape = (*size, image_feature.shape[-1]) if size is not None else tuple(image_feature.shape)
        if None not in shape:
            gib = total * int(np.prod(shape)) * 4 / 2**30
            what += f" ({gib:.1f} GiB as float32 at {'x'.join(map(str, shape))})"
    else:
        what = f"has more than max_examples={max_examples} examples{' of these classes' if filtered else ''}"
    base = split.split("[")[0].split("+")[0] if isinstance(split, str) else "train"
    fewer = "fewer `classes`" if filtered else "`classes=` to keep fewer classes"
    return (
        f"{dataset} split {split!r} {what}. Read less: a slice of the split (e.g. '{base}[:10%]') or {fewer}; "
        "or raise `max_examples` (`None`: no limit) if it fits in memory."
    )
