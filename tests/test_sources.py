import os
import zipfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_meta.data import EpisodeSampler, load_image_folder


def write_class_folders(root, num_classes=3, per_class=4):
    """Class folders of 6x6 PNGs whose gray level encodes the class."""
    for c in range(num_classes):
        folder = os.path.join(root, "alphabet", f"class{c}")
        os.makedirs(folder)
        for i in range(per_class):
            image = np.full((6, 6, 1), 40 * c + 10, np.uint8)
            tf.io.write_file(os.path.join(folder, f"{i}.png"), tf.io.encode_png(image))


def zip_folder(root, name):
    """Zips `root/name` into `root/name.zip`, entries starting with `name/`."""
    archive = root / f"{name}.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for folder, _, files in os.walk(root / name):
            for file in files:
                path = os.path.join(folder, file)
                z.write(path, os.path.relpath(path, root))
    return archive


def test_folder_and_zip_give_the_same_examples(tmp_path):
    write_class_folders(str(tmp_path / "data"))
    archive = zip_folder(tmp_path, "data")
    x_dir, y_dir, names_dir = load_image_folder(str(tmp_path / "data"), image_size=(6, 6))
    x_zip, y_zip, names_zip = load_image_folder(str(archive), image_size=(6, 6))
    assert names_dir == names_zip == ["alphabet/class0", "alphabet/class1", "alphabet/class2"]
    np.testing.assert_array_equal(y_dir, np.repeat([0, 1, 2], 4))
    np.testing.assert_array_equal(y_dir, y_zip)
    np.testing.assert_allclose(x_dir, x_zip)
    assert x_dir.shape == (12, 6, 6, 1) and x_dir.dtype == np.float32
    np.testing.assert_allclose(x_dir[y_dir == 2], (40 * 2 + 10) / 255, rtol=1e-6)


def test_sampler_from_directory(tmp_path):
    write_class_folders(str(tmp_path))
    sampler = EpisodeSampler.from_directory(str(tmp_path), ways=3, shots=1, queries=2, image_size=(6, 6), seed=0)
    assert sampler.class_names[1] == "alphabet/class1"
    inputs, labels = next(iter(sampler.dataset(batch_size=2)))
    assert inputs["support_x"].shape == (2, 3, 6, 6, 1)


def test_empty_or_missing_folder_raises(tmp_path):
    with pytest.raises(ValueError, match="No images"):
        load_image_folder(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="neither a folder"):
        load_image_folder(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="color_mode"):
        load_image_folder(str(tmp_path), color_mode="cmyk")


def test_sampler_from_tfds_mock_data():
    images = np.random.default_rng(0).integers(0, 255, (60, 28, 28, 1), dtype=np.uint8)
    labels = np.repeat(np.arange(6), 10)

    def as_dataset(self, split, as_supervised=False, **kwargs):
        del self, split, kwargs
        ds = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})
        return ds.map(lambda e: (e["image"], e["label"])) if as_supervised else ds

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        dataset = tfds.load("mnist", split="train", as_supervised=True)
        sampler = EpisodeSampler.from_dataset(dataset, ways=5, shots=2, queries=3, seed=0)
    assert sampler.num_classes == 6
    inputs, labels_out = next(iter(sampler.dataset(batch_size=2)))
    assert inputs["support_x"].dtype == tf.uint8 and inputs["support_x"].shape == (2, 10, 28, 28, 1)
    assert labels_out.shape == (2, 15)


def test_from_dataset_rejects_infinite_datasets():
    endless = tf.data.Dataset.from_tensor_slices((np.zeros((4, 3), "float32"), np.arange(4))).repeat()
    with pytest.raises(ValueError, match="infinite"):
        EpisodeSampler.from_dataset(endless, ways=2, shots=1, queries=1)


def test_zip_skips_macos_metadata(tmp_path):
    write_class_folders(str(tmp_path / "data"), num_classes=2, per_class=2)
    archive = zip_folder(tmp_path, "data")
    with zipfile.ZipFile(archive, "a") as z:
        z.writestr("__MACOSX/data/alphabet/class0/._0.png", b"not an image")
    x, y, names = load_image_folder(str(archive), image_size=6)
    assert names == ["alphabet/class0", "alphabet/class1"] and x.shape == (4, 6, 6, 1)


def test_from_dataset_bad_input():
    empty = tf.data.Dataset.from_tensor_slices((np.zeros((0, 3), "float32"), np.zeros(0, "int64")))
    with pytest.raises(ValueError, match="empty"):
        EpisodeSampler.from_dataset(empty, ways=2, shots=1, queries=1)
    not_pairs = tf.data.Dataset.from_tensor_slices(np.zeros((4, 3), "float32"))
    with pytest.raises(ValueError, match=r"\(x, y\)"):
        EpisodeSampler.from_dataset(not_pairs, ways=2, shots=1, queries=1)
    batched = tf.data.Dataset.from_tensor_slices((np.zeros((8, 3), "float32"), np.repeat([0, 1], 4))).batch(3)
    assert EpisodeSampler.from_dataset(batched, ways=2, shots=1, queries=1).num_classes == 2
