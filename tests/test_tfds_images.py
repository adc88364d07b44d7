import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_meta.datasets import tfds_images

# Known examples, served by `tfds.testing.mock_data` in place of prepared TFDS files: never downloads.
MNIST_IMAGES = np.random.default_rng(0).integers(0, 256, (30, 28, 28, 1), dtype=np.uint8)
MNIST_LABELS = np.arange(30) % 10
CIFAR_IMAGES = np.random.default_rng(1).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)


def _serving(examples):
    """An `as_dataset_fn` for `mock_data` yielding `examples` (a dict of arrays, or a list of dicts)."""
    def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
        if isinstance(examples, dict):
            dataset = tf.data.Dataset.from_tensor_slices(examples)
        else:  # images of several sizes
            dataset = tf.data.Dataset.from_generator(
                lambda: iter(examples),
                output_signature={"image": tf.TensorSpec([None, None, 3], tf.uint8),
                                  "label": tf.TensorSpec([], tf.int64)},
            )
        if decoders and "image" in decoders:  # SkipDecoding: the encoded image, as stored
            dataset = dataset.map(lambda example: {**example, "image": tf.io.encode_png(example["image"])})
        return dataset

    return tfds.testing.mock_data(as_dataset_fn=as_dataset)


@pytest.fixture
def mnist():
    with _serving({"image": MNIST_IMAGES, "label": MNIST_LABELS}):
        yield


@pytest.fixture
def cifar100():
    examples = {"image": CIFAR_IMAGES, "label": np.arange(8) * 10, "coarse_label": np.arange(8) % 4,
                "id": np.array([f"train_{i}" for i in range(8)])}
    with _serving(examples):
        yield


def test_load_reads_images_labels_and_class_names(mnist):
    images, labels, class_names = tfds_images.load("mnist", "train")
    assert images.shape == (30, 28, 28, 1) and images.dtype == np.float32
    np.testing.assert_allclose(images, MNIST_IMAGES / np.float32(255))
    assert labels.dtype == np.int64 and labels.tolist() == MNIST_LABELS.tolist()
    assert class_names == [str(i) for i in range(10)]


def test_load_uint8_keeps_stored_pixels(mnist):
    images, _, _ = tfds_images.load("mnist", "test", dtype="uint8")
    assert images.dtype == np.uint8 and np.array_equal(images, MNIST_IMAGES)


def test_resize_keeps_channels(mnist, cifar100):
    images = tfds_images.load("cifar100", "train", image_size=(16, 12), dtype="uint8").images
    assert images.shape == (8, 16, 12, 3) and images.dtype == np.uint8
    # Resized as `image_decoder(size, dtype="uint8")` resizes decoded files: in [0, 1], then rounded to uint8.
    pixels = tf.image.convert_image_dtype(CIFAR_IMAGES, tf.float32)
    expected = tf.image.resize(pixels, (16, 12), antialias=True).numpy()
    np.testing.assert_array_equal(images, (np.clip(expected, 0, 1) * 255).round().astype(np.uint8))
    images = tfds_images.load("cifar100", "train", image_size=8).images
    assert images.shape == (8, 8, 8, 3) and images.dtype == np.float32 and images.max() <= 1.0


def test_another_label_feature(cifar100):
    images, labels, class_names = tfds_images.load("cifar100", "train", label_key="coarse_label")
    assert len(class_names) == 20 and labels.tolist() == (np.arange(8) % 4).tolist()
    _, labels, class_names = tfds_images.load("cifar100", "train")
    assert len(class_names) == 100 and labels.tolist() == (np.arange(8) * 10).tolist()
    assert class_names[10] == "10"  # CIFAR-100's names come with the prepared files, not in the mock


@pytest.mark.parametrize("classes", [["7", "2", "5"], [7, 2, 5], np.array([7, 2, 5]), ("7", 2, "5")])
def test_class_subset_is_renumbered_in_the_order_given(mnist, classes):
    images, labels, class_names = tfds_images.load("mnist", "train", classes=classes, dtype="uint8", verbose=0)
    assert class_names == ["7", "2", "5"]
    keep = np.isin(MNIST_LABELS, [7, 2, 5])
    assert np.array_equal(images, MNIST_IMAGES[keep])
    assert labels.tolist() == [{7: 0, 2: 1, 5: 2}[label] for label in MNIST_LABELS[keep]]


def test_class_subset_with_resize(cifar100):
    images, labels, class_names = tfds_images.load("cifar100", "train", classes=[10, 0], image_size=4)
    assert class_names == ["10", "0"] and labels.tolist() == [1, 0]
    assert images.shape == (2, 4, 4, 3)


@pytest.mark.parametrize(
    "classes, message",
    [
        (["3", "eleven"], r"`classes` names 1 class\(es\) the 'label' feature does not have, e.g. \['eleven'\]"),
        ([3, 10], r"does not have, e.g. \[10\]"),
        ([-1], r"does not have, e.g. \[-1\]"),
        ([True], r"does not have, e.g. \[True\]"),
        (["3", 3], r"more than once: \['3'\]"),
        ([], r"`classes` is empty"),
    ],
)
def test_bad_classes_raise(mnist, classes, message):
    with pytest.raises(ValueError, match=message):
        tfds_images.load("mnist", "train", classes=classes)


def test_class_without_examples_in_the_split_raises(cifar100):
    with pytest.raises(ValueError, match=r"1 class\(es\) of `classes` have no example in cifar100 split 'train', "
                                         r"e.g. \['99'\]"):
        tfds_images.load("cifar100", "train", classes=[10, 99])


def test_more_than_max_examples_raises_instead_of_truncating(mnist):
    with pytest.raises(ValueError, match=r"mnist split 'train' has 30 examples, more than max_examples=29 "
                                         r"\(0\.0 GiB as float32 at 28x28x1\)\. Read less: a slice of the split "
                                         r"\(e\.g\. 'train\[:10%\]'\)"):
        tfds_images.load("mnist", "train", max_examples=29)
    # With classes, the count is known once read: it stops as soon as there are too many.
    with pytest.raises(ValueError, match=r"has more than max_examples=5 examples of these classes\. .*fewer `classes`"):
        tfds_images.load("mnist", "train", classes=[0, 1, 2], max_examples=5)
    assert len(tfds_images.load("mnist", "train", max_examples=30).labels) == 30
    assert len(tfds_images.load("mnist", "train", max_examples=None).labels) == 30


def test_images_of_several_sizes_need_image_size():
    rng = np.random.default_rng(2)
    examples = [{"image": rng.integers(0, 256, shape, dtype=np.uint8), "label": label}
                for shape, label in [((5, 7, 3), 0), ((5, 7, 3), 3), ((9, 4, 3), 46)]]
    with _serving(examples):
        with pytest.raises(ValueError, match=r"differ in size \(\(5, 7, 3\) and \(9, 4, 3\)\): pass `image_size=`"):
            tfds_images.load("dtd", "train")
        images, labels, class_names = tfds_images.load("dtd", "train", image_size=6)
        assert images.shape == (3, 6, 6, 3) and labels.tolist() == [0, 3, 46] and len(class_names) == 47
        assert class_names[:2] == ["banded", "blotchy"] and class_names[46] == "zigzagged"
        _, labels, class_names = tfds_images.load("dtd", "train", image_size=6, classes=["zigzagged", 3])
        assert labels.tolist() == [1, 0] and class_names == ["zigzagged", "bubbly"]


def test_builder_passthrough_and_download(mnist):
    builder = tfds.builder("mnist")
    images, labels, _ = tfds_images.load(builder, "train", download=True, verbose=0)
    assert images.shape == (30, 28, 28, 1) and len(labels) == 30
    with pytest.raises(ValueError, match="not with a builder"):
        tfds_images.load(builder, "train", data_dir="/tmp")


def test_not_prepared_dataset_says_how_to_prepare_it(tmp_path, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
    expected = (rf"TFDS dataset 'mnist' is not prepared in {tmp_path}\. Prepare it "
                rf"once with `tfds build mnist --data_dir={tmp_path}` .*`download=True`")
    with pytest.raises(FileNotFoundError, match=expected):
        tfds_images.load("mnist", "train", data_dir=str(tmp_path))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(image_key="pixels"), r"mnist examples have no 'pixels' feature; they have \['image', 'label'\]"),
        (dict(label_key="digit"), r"no 'digit' feature.*`label_key=`"),
    ],
)
def test_unknown_features_raise(mnist, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tfds_images.load("mnist", "train", **kwargs)


def test_image_feature_must_be_a_uint8_image(cifar100):
    with pytest.raises(ValueError, match=r"cifar100 feature 'label' is not an image \[H, W, C\]"):
        tfds_images.load("cifar100", "train", image_key="label")


def test_label_feature_must_be_a_class_label(cifar100):
    with pytest.raises(ValueError, match=r"'id' is not a class label \(Text\); its class label features are "
                                         r"\['coarse_label', 'label'\]"):
        tfds_images.load("cifar100", "train", label_key="id")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(dtype="float16"), r"`dtype` must be 'float32'"),
        (dict(image_size=0), r"`image_size` must be a positive int"),
        (dict(max_examples=0), r"`max_examples` must be a positive int or None"),
        (dict(max_examples=2.5), r"`max_examples` must be a positive int or None"),
        (dict(verbose=2), r"`verbose` must be 0 or 1"),
    ],
)
def test_bad_arguments_raise_before_loading(kwargs, message, monkeypatch):
    monkeypatch.setattr(tfds, "builder", lambda *a, **k: pytest.fail("loaded before checking the arguments"))
    with pytest.raises(ValueError, match=message):
        tfds_images.load("mnist", "train", **kwargs)


def test_verbose_0_is_silent(mnist, capsys):
    tfds_images.load("mnist", "train", verbose=0)
    assert capsys.readouterr().out == ""
    tfds_images.load("mnist", "train")
    assert "30/30" in capsys.readouterr().out


def test_meta_dataset_sources_exist_in_tfds(tmp_path):
    available = set(tfds.list_builders())
    sources = {**tfds_images.META_DATASET_SOURCES, **tfds_images.EXTRA_META_DATASET_SOURCES}
    assert set(sources.values()) <= available
    for name in sources.values():
        features = tfds.builder(name, data_dir=str(tmp_path)).info.features
        assert isinstance(features["label"], tfds.features.ClassLabel)
        assert isinstance(features["image"], tfds.features.Image)


@pytest.mark.parametrize("total", [None, 30, 20, 40])
def test_read_fills_one_array_whatever_the_known_count(total):
    # total: None (filtered classes: unknown), exact, or a count that turns out wrong.
    dataset = tf.data.Dataset.from_tensor_slices((MNIST_IMAGES, MNIST_LABELS)).batch(7)
    images, labels = tfds_images._read(dataset, True, total, None, 0, lambda: "too many", "float32")
    assert images.dtype == np.float32 and images.shape == (30, 28, 28, 1)
    np.testing.assert_allclose(images, MNIST_IMAGES / np.float32(255))
    assert labels.tolist() == MNIST_LABELS.tolist()
    raw, _ = tfds_images._read(dataset, True, total, None, 0, lambda: "too many", "uint8")
    np.testing.assert_array_equal(raw, MNIST_IMAGES)
