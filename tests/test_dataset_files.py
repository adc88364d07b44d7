"""Dataset files: checked downloads, archives extracted once, files a user must supply."""

import errno
import hashlib
import io
import os
import tarfile
import zipfile

import keras
import pytest

from keras_meta.datasets import files


def payload_file(tmp_path, content=b"few-shot bytes"):
    source = tmp_path / "origin" / "data.bin"
    source.parent.mkdir()
    source.write_bytes(content)
    return source, hashlib.sha256(content).hexdigest()


def test_download_checks_the_sha256_and_caches(tmp_path):
    source, sha256 = payload_file(tmp_path)
    path = files.download("data.bin", source.as_uri(), sha256, "toy", data_dir=str(tmp_path / "cache"))
    assert path == str(tmp_path / "cache" / "toy" / "data.bin")
    assert open(path, "rb").read() == b"few-shot bytes"
    source.unlink()  # cached: no second download
    assert files.download("data.bin", source.as_uri(), sha256, "toy", data_dir=str(tmp_path / "cache")) == path


def test_a_download_failing_its_check_is_removed(tmp_path):
    source, _ = payload_file(tmp_path)
    with pytest.raises(ValueError, match="expected SHA-256 .*the file was removed"):
        files.download("data.bin", source.as_uri(), "0" * 64, "toy", data_dir=str(tmp_path / "cache"))
    assert not (tmp_path / "cache" / "toy" / "data.bin").exists()


def test_offline_error_names_the_folder_to_copy_into(tmp_path):
    with pytest.raises(OSError, match="copy data.bin into .*cache/toy by hand") as raised:
        files.download("data.bin", "http://127.0.0.1:9/data.bin", "0" * 64, "toy", data_dir=str(tmp_path / "cache"),
                       alternatives="Or use the bundled copy.")
    assert "Or use the bundled copy." in str(raised.value)
    assert not (tmp_path / "cache" / "toy" / "data.bin").exists()


def test_a_cached_file_with_the_wrong_hash_is_kept_aside_not_deleted(tmp_path):
    folder = tmp_path / "cache" / "toy"
    folder.mkdir(parents=True)
    (folder / "data.bin").write_bytes(b"a user's own copy")
    with pytest.raises(OSError, match="kept as .*data.bin.sha256-mismatch"):
        files.download("data.bin", "http://127.0.0.1:9/data.bin", "0" * 64, "toy", data_dir=str(tmp_path / "cache"))
    assert (folder / "data.bin.sha256-mismatch").read_bytes() == b"a user's own copy"
    source, sha256 = payload_file(tmp_path)  # reachable now: the right file replaces it
    assert open(files.download("data.bin", source.as_uri(), sha256, "toy", data_dir=str(tmp_path / "cache")),
                "rb").read() == b"few-shot bytes"


def test_every_mismatched_copy_is_kept_under_a_free_name(tmp_path):
    folder = tmp_path / "cache" / "toy"
    folder.mkdir(parents=True)
    for content in (b"first copy", b"second copy", b"third copy"):
        (folder / "data.bin").write_bytes(content)
        with pytest.raises(OSError, match="kept as"):
            files.download("data.bin", "http://127.0.0.1:9/data.bin", "0" * 64, "toy",
                           data_dir=str(tmp_path / "cache"))
    assert (folder / "data.bin.sha256-mismatch").read_bytes() == b"first copy"
    assert (folder / "data.bin.sha256-mismatch.1").read_bytes() == b"second copy"
    assert (folder / "data.bin.sha256-mismatch.2").read_bytes() == b"third copy"


def pretend_read_only(monkeypatch, root):
    """`os.access` reports everything under `root` not writable, as on a read-only mount (tests run as root)."""
    real, root = os.access, os.path.abspath(root)

    def access(path, mode, *args, **kwargs):
        inside = os.path.abspath(os.fspath(path)) + os.sep
        if mode & os.W_OK and inside.startswith(root + os.sep):
            return False
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


def no_get_file(monkeypatch):
    monkeypatch.setattr(keras.utils, "get_file", lambda *a, **k: pytest.fail("get_file was called"))


def test_a_correct_file_on_a_read_only_folder_is_used_as_it_is(tmp_path, monkeypatch):
    folder = tmp_path / "cache" / "toy"
    folder.mkdir(parents=True)
    (folder / "data.bin").write_bytes(b"placed by hand")
    sha256 = hashlib.sha256(b"placed by hand").hexdigest()
    pretend_read_only(monkeypatch, tmp_path / "cache")
    no_get_file(monkeypatch)  # get_file would switch to /tmp/.keras and download again
    path = files.download("data.bin", "http://127.0.0.1:9/data.bin", sha256, "toy", data_dir=str(tmp_path / "cache"))
    assert path == str(folder / "data.bin")


def test_a_read_only_folder_without_the_file_is_named(tmp_path, monkeypatch):
    (tmp_path / "cache" / "toy").mkdir(parents=True)
    pretend_read_only(monkeypatch, tmp_path / "cache")
    no_get_file(monkeypatch)
    with pytest.raises(OSError, match=r"cache/toy is not writable: cannot download data.bin .*copy data.bin "
                                      r"\(SHA-256 0{64}\) into .*cache/toy by hand"):
        files.download("data.bin", "http://127.0.0.1:9/data.bin", "0" * 64, "toy", data_dir=str(tmp_path / "cache"))
    assert os.listdir(tmp_path / "cache" / "toy") == []


def test_only_the_dataset_folder_needs_to_be_writable(tmp_path, monkeypatch):
    source, sha256 = payload_file(tmp_path)
    (tmp_path / "cache" / "toy").mkdir(parents=True)
    real = os.access
    root = str(tmp_path / "cache")
    monkeypatch.setattr(os, "access", lambda path, mode, *a, **k: (
        False if mode & os.W_OK and os.path.abspath(os.fspath(path)) == root else real(path, mode, *a, **k)))
    path = files.download("data.bin", source.as_uri(), sha256, "toy", data_dir=root)
    assert path == str(tmp_path / "cache" / "toy" / "data.bin") and os.path.isfile(path)


def test_default_cache_folder_follows_keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert files.cache_folder("cub") == str(tmp_path / "cub")
    assert files.cache_folder("cub", data_dir="/data") == "/data/cub"


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_extract_unpacks_once_into_a_complete_folder(tmp_path, kind):
    archive = tmp_path / f"set.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as zipped:
            zipped.writestr("set/a/1.txt", "one")
    else:
        with tarfile.open(archive, "w:gz") as tarred:
            info = tarfile.TarInfo("set/a/1.txt")
            info.size = 3
            tarred.addfile(info, io.BytesIO(b"one"))
    folder = files.extract(str(archive))
    assert folder == str(tmp_path / "set_extracted")
    assert open(os.path.join(folder, "set", "a", "1.txt")).read() == "one"
    os.remove(os.path.join(folder, "set", "a", "1.txt"))
    assert files.extract(str(archive)) == folder  # already extracted: left as it is
    assert not os.path.exists(os.path.join(folder, "set", "a", "1.txt"))
    assert [name for name in os.listdir(tmp_path) if name.startswith(".extracting")] == []


def test_a_broken_archive_leaves_no_folder_behind(tmp_path):
    archive = tmp_path / "broken.zip"
    archive.write_bytes(b"not an archive at all")
    with pytest.raises(ValueError, match="neither a zip nor a tar archive"):
        files.extract(str(archive))
    assert sorted(os.listdir(tmp_path)) == ["broken.zip"]


def tar_with(path, names):
    with tarfile.open(path, "w") as tarred:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = 3
            tarred.addfile(info, io.BytesIO(b"one"))
    return str(path)


def test_extracting_into_a_read_only_folder_says_what_to_do(tmp_path, monkeypatch):
    archive = tar_with(tmp_path / "set.tar", ["set/a.txt"])
    pretend_read_only(monkeypatch, tmp_path)
    with pytest.raises(OSError, match=r"not writable: cannot extract set.tar into .*set_extracted. Instead, pass "
                                      r"`data_dir=` a writable folder, or extract .*set.tar by hand into "
                                      r".*set_extracted"):
        files.extract(archive)
    assert sorted(os.listdir(tmp_path)) == ["set.tar"]
    (tmp_path / "set_extracted" / "set").mkdir(parents=True)  # extracted by hand: used as it is
    assert files.extract(archive) == str(tmp_path / "set_extracted")


def test_a_folder_another_process_extracted_first_is_used(tmp_path, monkeypatch):
    archive = tar_with(tmp_path / "set.tar", ["set/a.txt"])
    real = os.replace

    def replace(source, target):
        if str(target).endswith("_extracted"):  # the other process renames its complete folder first
            os.makedirs(os.path.join(target, "set"))
            open(os.path.join(target, "set", "theirs.txt"), "w").close()
        return real(source, target)

    monkeypatch.setattr(os, "replace", replace)
    folder = files.extract(archive)
    assert os.listdir(os.path.join(folder, "set")) == ["theirs.txt"]
    assert sorted(os.listdir(tmp_path)) == ["set.tar", "set_extracted"]  # no scratch folder left


@pytest.mark.parametrize("old_python", [False, True])
def test_tar_members_outside_the_folder_are_refused(tmp_path, monkeypatch, old_python):
    if old_python:  # Python < 3.11.4: no extraction filters
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
        real = tarfile.TarFile.extractall

        def extractall(self, path=".", members=None, *, numeric_owner=False, **kwargs):
            if kwargs:
                raise TypeError(f"extractall() got an unexpected keyword argument {next(iter(kwargs))!r}")
            return real(self, path, members, numeric_owner=numeric_owner, filter="fully_trusted")

        monkeypatch.setattr(tarfile.TarFile, "extractall", extractall)
    (tmp_path / "in").mkdir()
    good = tar_with(tmp_path / "in" / "good.tar", ["set/a.txt"])
    assert open(os.path.join(files.extract(good), "set", "a.txt")).read() == "one"
    for number, name in enumerate(("../evil.txt", "set/../../evil.txt")):
        bad = tar_with(tmp_path / "in" / f"bad{number}.tar", [name])
        with pytest.raises(tarfile.TarError):
            files.extract(bad)
        assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "in" / f"bad{number}_extracted").exists()
    outside = tmp_path / "absolute.txt"  # refused, or (Python's filter) written inside the folder instead
    try:
        inside = files.extract(tar_with(tmp_path / "in" / "absolute.tar", [str(outside)]))
        assert os.path.isfile(inside + str(outside))
    except tarfile.TarError:
        assert old_python
    assert not outside.exists()
    with pytest.raises(ValueError, match=r"bad1.tar cannot be extracted .*corrupted or incomplete. Delete it"):
        files.extracted(bad, "set", ["a.txt"], "Toy", "https://example.com/bad.tar")


def test_extracted_reports_corruption_but_not_other_errors(tmp_path, monkeypatch):
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("set/a.txt", "one")
    assert files.extracted(str(archive), "set", ["a.txt"], "Toy", "x") == str(tmp_path / "set_extracted" / "set")
    with pytest.raises(FileNotFoundError, match="Toy: b.txt not found in .*incomplete"):
        files.extracted(str(archive), "set", ["a.txt", "b.txt"], "Toy", "x")
    truncated = tmp_path / "truncated.tar.gz"
    with tarfile.open(truncated, "w:gz") as tarred:
        info = tarfile.TarInfo("set/a.bin")
        payload = os.urandom(100_000)
        info.size = len(payload)
        tarred.addfile(info, io.BytesIO(payload))
    truncated.write_bytes(truncated.read_bytes()[:20_000])
    with pytest.raises(ValueError, match="truncated.tar.gz cannot be extracted .*Delete it"):
        files.extracted(str(truncated), "set", ["a.bin"], "Toy", "x")
    (tmp_path / "junk.zip").write_bytes(b"not an archive")
    with pytest.raises(ValueError, match="neither a zip nor a tar archive.*Delete it"):
        files.extracted(str(tmp_path / "junk.zip"), "set", [], "Toy", "x")

    def disk_full(archive):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "extract", disk_full)
    with pytest.raises(OSError, match="No space left on device") as error:
        files.extracted(str(tmp_path / "other.zip"), "set", ["a.txt"], "Toy", "x")
    assert "Delete" not in str(error.value)


def test_unpickle_reads_python2_pickles_and_names_a_corrupted_file(tmp_path):
    import pickle

    import numpy as np

    path = tmp_path / "data.pkl"
    # A Python 2 pickle: a str key (SHORT_BINSTRING) and a NumPy array whose raw bytes are a str too.
    path.write_bytes(
        b"\x80\x02}q\x00U\x04dataq\x01cnumpy.core.multiarray\n_reconstruct\nq\x02cnumpy\nndarray\nq\x03K\x00"
        b"\x85U\x01b\x87Rq\x04(K\x01K\x03\x85cnumpy\ndtype\nq\x05U\x02u1K\x00K\x01\x87Rq\x06(K\x03U\x01|NNNJ"
        b"\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89U\x03\x01\x02\xfftbs."
    )
    data = files.unpickle(str(path))
    assert list(data) == ["data"] and data["data"].tolist() == [1, 2, 255]
    path.write_bytes(pickle.dumps({"labels": np.arange(100)})[:50])
    with pytest.raises(ValueError, match="data.pkl cannot be read as a pickle .*corrupted or incomplete"):
        files.unpickle(str(path))


def test_require_says_what_to_fetch_and_where(tmp_path):
    (tmp_path / "train.csv").write_text("filename,label\n")
    assert files.require(str(tmp_path), ["train.csv"], "toy", "Fetch it.") == str(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"toy: test.csv not found in .*Fetch the CSVs\. Put the files in"):
        files.require(str(tmp_path), ["train.csv", "test.csv"], "toy", "Fetch the CSVs.")
    assert files.find_first(str(tmp_path), [["x.pkl"], ["train.csv"]]) == ["train.csv"]
    assert files.find_first(str(tmp_path), [["x.pkl"]]) is None
