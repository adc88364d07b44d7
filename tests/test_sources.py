import os
import re
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


def test_corrupt_image_is_named(tmp_path):
    write_class_folders(str(tmp_path / "data"), num_classes=2, per_class=2)
    (tmp_path / "data" / "alphabet" / "class1" / "1.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"Cannot decode 'alphabet/class1/1.png' in .*data'.*Unknown image file"):
        load_image_folder(str(tmp_path / "data"), image_size=6)
    archive = zip_folder(tmp_path, "data")
    with pytest.raises(ValueError, match=r"Cannot decode 'data/alphabet/class1/1.png' in .*data.zip'"):
        load_image_folder(str(archive), image_size=6)


def test_truncated_image_is_named(tmp_path):
    write_class_folders(str(tmp_path / "data"), num_classes=2, per_class=2)
    png = tmp_path / "data" / "alphabet" / "class0" / "0.png"
    png.write_bytes(png.read_bytes()[:30])
    with pytest.raises(ValueError, match=r"Cannot decode 'alphabet/class0/0.png'"):
        load_image_folder(str(tmp_path / "data"), image_size=6)


def test_corrupt_or_missing_zip(tmp_path):
    write_class_folders(str(tmp_path / "data"), num_classes=2, per_class=2)
    archive = zip_folder(tmp_path, "data")
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(archive.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"'.*truncated.zip' is a corrupt zip file"):
        load_image_folder(str(truncated))
    with pytest.raises(FileNotFoundError, match="missing.zip"):
        load_image_folder(str(tmp_path / "missing.zip"))
    not_a_zip = tmp_path / "notes.txt"
    not_a_zip.write_text("hello")
    with pytest.raises(ValueError, match="neither a folder nor a .zip file"):
        load_image_folder(str(not_a_zip))


def test_zip_with_a_damaged_member_names_it(tmp_path):
    write_class_folders(str(tmp_path / "data"), num_classes=2, per_class=2)
    archive = zip_folder(tmp_path, "data")  # stored, not compressed: the image bytes appear as they are
    content = bytearray(archive.read_bytes())
    start = content.index(b"IDAT")
    content[start + 4:start + 8] = b"\0\0\0\0"
    archive.write_bytes(bytes(content))
    with pytest.raises(ValueError, match=r"corrupt zip file \(member 'data/alphabet/class0/0.png'\)"):
        load_image_folder(str(archive))


def test_images_outside_class_folders_raise(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(2):
        tf.io.write_file(str(flat / f"{i}.png"), tf.io.encode_png(np.zeros((6, 6, 1), np.uint8)))
    with pytest.raises(ValueError, match=r"top level \(e.g. '0.png'\).*one sub-folder per class"):
        load_image_folder(str(flat))
    top_level = tmp_path / "top_level.zip"
    with zipfile.ZipFile(top_level, "w") as z:
        z.write(flat / "0.png", "0.png")
        z.write(flat / "1.png", "1.png")
    with pytest.raises(ValueError, match=r"top level \(e.g. '0.png'\).*one sub-folder per class"):
        load_image_folder(str(top_level))
    wrapped = zip_folder(tmp_path, "flat")  # flat/0.png, flat/1.png: still no class folders
    with pytest.raises(ValueError, match=r"top level \(e.g. 'flat/0.png'\).*one sub-folder per class"):
        load_image_folder(str(wrapped))


@pytest.mark.parametrize("image_size", [0, -3, (28, 0), (28,), (28, 28, 1), 2.5, "28", True, None])
def test_bad_image_size_raises(tmp_path, image_size):
    write_class_folders(str(tmp_path), num_classes=2, per_class=2)
    with pytest.raises(ValueError, match=r"`image_size` must be a positive int .*got " + re.escape(repr(image_size))):
        load_image_folder(str(tmp_path), image_size=image_size)
    with pytest.raises(ValueError, match=r"`image_size`"):
        EpisodeSampler.from_directory(str(tmp_path), ways=2, shots=1, queries=1, image_size=image_size)


def test_image_size_pair_and_numpy_ints(tmp_path):
    write_class_folders(str(tmp_path), num_classes=2, per_class=2)
    x, _, _ = load_image_folder(str(tmp_path), image_size=[np.int64(4), 5])
    assert x.shape == (4, 4, 5, 1)


def test_dataset_of_unknown_size_is_read_up_to_max_examples():
    pairs = tf.data.Dataset.from_tensor_slices((np.zeros((8, 3), "float32"), np.repeat([0, 1], 4)))
    endless = pairs.repeat().filter(lambda x, y: y >= 0)
    assert int(endless.cardinality()) == tf.data.UNKNOWN_CARDINALITY
    with pytest.raises(ValueError, match=r"size is unknown and may be infinite.*max_examples=50.*\.take\(n\)"):
        EpisodeSampler.from_dataset(endless, ways=2, shots=1, queries=1, max_examples=50)
    with pytest.raises(ValueError, match=r"size is unknown.*max_examples=50"):  # batched the same
        EpisodeSampler.from_dataset(endless.batch(7), ways=2, shots=1, queries=1, max_examples=50)
    finite = pairs.filter(lambda x, y: y >= 0)
    assert EpisodeSampler.from_dataset(finite, ways=2, shots=1, queries=1, max_examples=8).num_classes == 2
    with pytest.raises(ValueError, match=r"`max_examples` must be a positive integer, got 0"):
        EpisodeSampler.from_dataset(finite, ways=2, shots=1, queries=1, max_examples=0)


def test_infinite_dataset_advice():
    endless = tf.data.Dataset.from_tensor_slices((np.zeros((4, 3), "float32"), np.arange(4))).repeat()
    with pytest.raises(ValueError, match=r"infinite.*make it finite with `\.take\(n\)`"):
        EpisodeSampler.from_dataset(endless, ways=2, shots=1, queries=1)


def test_from_dataset_rejects_non_datasets_and_ragged_examples():
    with pytest.raises(ValueError, match="Expected a `tf.data.Dataset`.*EpisodeSampler"):
        EpisodeSampler.from_dataset((np.zeros((4, 3)), np.arange(4)), ways=2, shots=1, queries=1)
    ragged = tf.data.Dataset.from_generator(
        lambda: ((np.zeros((n, 3), "float32"), n % 2) for n in (2, 3, 2, 3)),
        output_signature=(tf.TensorSpec([None, 3], tf.float32), tf.TensorSpec([], tf.int64)))
    with pytest.raises(ValueError, match="differ in shape"):
        EpisodeSampler.from_dataset(ragged, ways=2, shots=1, queries=1)
