"""Dataset files on disk: downloads checked by SHA-256, archives extracted once, files users supply.

Every loader in `keras_meta.datasets` finds its files through these functions:

- `download` returns the file in the cache folder when its SHA-256 matches
  (a copy put there by hand is used as it is, even on a read-only folder),
  else fetches it with `keras.utils.get_file` (progress bar, SHA-256 check).
  A download that fails its check is deleted before the error is raised, and
  an offline machine gets an error naming the folder to copy the file into
  by hand. A file already in the cache whose SHA-256 is wrong is renamed to
  `<name>.sha256-mismatch` (`.1`, `.2`, ... when that name is taken) first,
  never deleted. A cache folder that cannot be written raises `OSError`
  naming it, instead of downloading somewhere else.
- `extract` unpacks a `.zip` / `.tar` / `.tar.gz` / `.tgz` next to it, into
  `<archive>_extracted/`, through a temporary folder, so an interrupted
  extraction never leaves a half-filled folder behind; `extracted` does so
  and checks the files a loader needs, turning a corrupted archive into a
  `ValueError` that says to delete it.
- `require` checks that files a user has to fetch (licensed datasets) are in
  place, and otherwise says what to download and where to put it.
- `unpickle` reads the (often Python 2) pickles datasets ship in.

Example:

>>> from keras_meta.datasets import files
>>> files.cache_folder("cub", data_dir="/data")
'/data/cub'
>>> path = files.download("CUB_200_2011.tgz", ORIGIN, SHA256, "cub")  # doctest: +SKIP
"""

import errno
import gzip
import hashlib
import os
import pickle
import shutil
import struct
import tarfile
import tempfile
import zipfile
import zlib

import keras

MISMATCH_SUFFIX = ".sha256-mismatch"


class NotAnArchiveError(ValueError):
    """`extract` was given a file that is neither a zip nor a tar archive."""


# What reading a damaged (truncated, corrupted) archive raises; other errors (a full disk, a folder that
# cannot be written) say nothing about the archive.
CORRUPTION_ERRORS = (tarfile.TarError, EOFError, zlib.error, zipfile.BadZipFile, gzip.BadGzipFile, NotAnArchiveError)


def cache_folder(dataset, data_dir=None):
    """The folder that holds `dataset`'s files: `data_dir/dataset`, by default under `$KERAS_HOME` or `~/.keras`."""
    root = data_dir or os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(root, dataset)


def download(fname, origin, sha256, dataset, data_dir=None, alternatives=""):
    """Local path of `fname`: the cached copy if its SHA-256 matches, else downloaded from `origin` now.

    A copy with the right SHA-256 is returned as it is, without a download,
    even in a folder that cannot be written. Raises `ValueError` when the
    downloaded file fails its SHA-256 check (the file is removed first) and
    `OSError` when the download fails (offline, say), naming the folder to
    copy `fname` into by hand, or when that folder cannot be written.
    `alternatives` is appended to the offline message (other ways to get the
    data).

    A file put in the cache folder by hand is used without any download:

    >>> import hashlib, tempfile
    >>> data_dir = tempfile.mkdtemp()
    >>> os.makedirs(os.path.join(data_dir, "toy"))
    >>> with open(os.path.join(data_dir, "toy", "toy.bin"), "wb") as f:
    ...     _ = f.write(b"toy data")
    >>> sha256 = hashlib.sha256(b"toy data").hexdigest()
    >>> path = download("toy.bin", "https://example.com/toy.bin", sha256, "toy", data_dir=data_dir)
    >>> path == os.path.join(data_dir, "toy", "toy.bin")
    True
    >>> shutil.rmtree(data_dir)
    """
    folder = cache_folder(dataset, data_dir)
    target = os.path.join(folder, fname)
    present = os.path.isfile(target)
    if present and sha256_of(target) == sha256:
        return target
    where = f"copy {fname} (SHA-256 {sha256}) into {folder} by hand, or pass `data_dir=` a writable folder"
    _check_writable(folder, f"cannot download {fname} into it ({origin})", where)
    kept = _set_aside(target) if present else None
    kept_note = (
        f" A file {fname} that was already there did not match the SHA-256; it is kept as {kept}." if kept else ""
    )
    try:
        # cache_dir is the folder itself: get_file must not find a parent read-only and write to /tmp instead.
        return keras.utils.get_file(
            fname, origin, file_hash=sha256, hash_algorithm="sha256", cache_subdir="", cache_dir=folder,
        )
    except ValueError as error:
        if os.path.exists(target):
            os.remove(target)
        raise ValueError(
            f"{fname} downloaded from {origin} does not have the expected SHA-256 {sha256} "
            f"({error}); the file was removed. Download it again; if the check fails again, the file "
            f"at {origin} is not the one this loader reads.{kept_note}"
        ) from None
    except Exception as error:  # get_file raises bare Exceptions for network failures.
        if os.path.exists(target):
            os.remove(target)
        raise OSError(
            f"Could not download {fname} from {origin} ({error}). If this machine is offline, copy "
            f"{fname} into {folder} by hand (or into DATA_DIR/{dataset} with `data_dir=DATA_DIR`)."
            f"{' ' + alternatives if alternatives else ''}{kept_note}"
        ) from error


def _check_writable(folder, what, instead):
    """Creates `folder` if needed; `OSError` naming it (`what` cannot be done; do `instead`) if it cannot be written."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        message = f"{folder} cannot be created ({error.strerror}): {what}. Instead, {instead}."
        raise OSError(error.errno, message) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OSError(errno.EACCES, f"{folder} is not writable: {what}. Instead, {instead}.")


def sha256_of(path, chunk_size=1 << 20):
    """The SHA-256 hex digest of the file at `path`.

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile(delete=False) as f:
    ...     _ = f.write(b"abc")
    >>> sha256_of(f.name)
    'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad'
    >>> os.remove(f.name)
    """
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _set_aside(target):
    """Renames `target` (a cached file whose SHA-256 is wrong: a user's copy, say) to a free name, so no download
    can delete it: `<target>.sha256-mismatch`, else `<target>.sha256-mismatch.1`, `.2`, ..."""
    kept, number = target + MISMATCH_SUFFIX, 0
    while os.path.lexists(kept):
        number += 1
        kept = f"{target}{MISMATCH_SUFFIX}.{number}"
    os.replace(target, kept)
    return kept


def extract(archive):
    """Unpacks `archive` once into `<archive>_extracted/` and returns that folder.

    Extraction goes to a temporary folder beside it that is renamed when
    complete, so a crash leaves no partial folder to be mistaken for data. A
    folder already there (extracted by hand, or by another process) is used
    as it is. Raises `OSError` naming the folder when it cannot be written,
    `NotAnArchiveError` (a `ValueError`) for a file that is no archive.

    >>> import tempfile, zipfile
    >>> folder = tempfile.mkdtemp()
    >>> with zipfile.ZipFile(os.path.join(folder, "set.zip"), "w") as zipped:
    ...     zipped.writestr("set/a.txt", "one")
    >>> extracted = extract(os.path.join(folder, "set.zip"))
    >>> os.path.basename(extracted), os.listdir(os.path.join(extracted, "set"))
    ('set_extracted', ['a.txt'])
    >>> shutil.rmtree(folder)
    """
    target = _extracted_name(archive)
    if os.path.isdir(target):
        return target
    parent = os.path.dirname(target)
    instead = (f"pass `data_dir=` a writable folder, or extract {archive} by hand into {target} "
               "(it is then used as it is)")
    what = f"cannot extract {os.path.basename(archive)} into {target}"
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OSError(errno.EACCES, f"{parent} is not writable: {what}. Instead, {instead}.")
    try:
        scratch = tempfile.mkdtemp(prefix=".extracting-", dir=parent)
    except OSError as error:
        raise OSError(error.errno, f"{parent} cannot be written ({error.strerror}): {what}. Instead, {instead}.") \
            from None
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zipped:
                zipped.extractall(scratch)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tarred:
                _extract_tar(tarred, scratch)
        else:
            raise NotAnArchiveError(
                f"{archive} is neither a zip nor a tar archive; it may be corrupted. Delete it and retry.")
        try:
            os.replace(scratch, target)
        except OSError:
            if not os.path.isdir(target):
                raise
            # Another process finished extracting first: its folder is complete (it was renamed into place too).
    finally:
        if os.path.isdir(scratch):
            shutil.rmtree(scratch)
    return target


def _extract_tar(tarred, folder):
    """`tarred.extractall(folder)`, refusing members that would land outside `folder`.

    Python >= 3.11.4 (and the 3.8-3.10 security releases) does this with
    `filter="data"`; older versions get the same check on names and links here.
    """
    if hasattr(tarfile, "data_filter"):
        tarred.extractall(folder, filter="data")
        return
    members = tarred.getmembers()
    for member in members:
        names = [member.name] + ([member.linkname] if member.issym() or member.islnk() else [])
        for name in names:
            parts = name.replace("\\", "/").split("/")
            if name.startswith(("/", "\\")) or os.path.isabs(name) or ".." in parts:
                raise tarfile.TarError(f"member {member.name!r} would be written outside the extraction folder")
        if member.isdev():
            raise tarfile.TarError(f"member {member.name!r} is a device file, not data")
    tarred.extractall(folder, members=members)


def _extracted_name(archive):
    base = os.path.abspath(archive)
    for suffix in (".tar.gz", ".tgz", ".tar", ".zip"):
        if base.endswith(suffix):
            return base[: -len(suffix)] + "_extracted"
    return base + "_extracted"


def extracted(archive, folder, required_names, dataset, origin):
    """`<archive>_extracted/<folder>`, extracting `archive` once, checked to hold every path of `required_names`.

    A damaged archive (truncated, corrupted) raises `ValueError` saying to
    delete it and load again; other errors (a full disk, a folder that cannot
    be written) are raised as they are, since the archive is fine. Missing
    files raise `FileNotFoundError`.

    >>> import tempfile, zipfile
    >>> data = tempfile.mkdtemp()
    >>> with zipfile.ZipFile(os.path.join(data, "toy.zip"), "w") as zipped:
    ...     zipped.writestr("toy/train.txt", "1 2 3")
    >>> found = extracted(os.path.join(data, "toy.zip"), "toy", ["train.txt"], "Toy", "https://example.com/toy.zip")
    >>> found == os.path.join(data, "toy_extracted", "toy")
    True
    >>> shutil.rmtree(data)
    """
    try:
        root = extract(archive)
    except CORRUPTION_ERRORS as error:
        raise ValueError(
            f"{archive} cannot be extracted ({error}): it is corrupted or incomplete. Delete it and load "
            "again to download it anew."
        ) from None
    return require(
        os.path.join(root, folder), required_names, dataset,
        f"The archive {archive} is incomplete or not {os.path.basename(archive)} of {dataset} ({origin}): "
        f"delete it and the folder {root}, then load again to download it.",
    )


def require(folder, names, dataset, how_to_get):
    """`folder` if every path in `names` exists under it, else `FileNotFoundError` saying what to fetch.

    For datasets that cannot be downloaded automatically: `how_to_get` tells
    the user where the files come from.

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> require(folder, ["train.csv"], "Toy", "Get it from example.com.")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: Toy: train.csv not found in ... Get it from example.com. Put the files in ...
    >>> open(os.path.join(folder, "train.csv"), "w").close()
    >>> require(folder, ["train.csv"], "Toy", "Get it from example.com.") == folder
    True
    >>> shutil.rmtree(folder)
    """
    missing = [name for name in names if not os.path.exists(os.path.join(folder, name))]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise FileNotFoundError(
            f"{dataset}: {shown} not found in {folder}. {how_to_get} Put the files in {folder} "
            f"(or pass `data_dir=` the folder that holds them)."
        )
    return folder


def find_first(folder, candidates):
    """The first of `candidates` (lists of relative paths, each one layout) whose files all exist under `folder`.

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> open(os.path.join(folder, "train.pkl"), "w").close()
    >>> find_first(folder, [["train.csv", "images"], ["train.pkl"]])
    ['train.pkl']
    >>> find_first(folder, [["test.pkl"]]) is None
    True
    >>> shutil.rmtree(folder)
    """
    for layout in candidates:
        if all(os.path.exists(os.path.join(folder, name)) for name in layout):
            return layout
    return None


# What `pickle.load` raises on a truncated or corrupted file.
_PICKLE_ERRORS = (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, KeyError, TypeError,
                  ValueError, struct.error, OverflowError)


def unpickle(path):
    """The object in the pickle file at `path`; Python 2 pickles (byte strings, NumPy arrays) are read as latin-1.

    A truncated or corrupted file raises `ValueError` naming it. Pickles run
    code when loaded: read only files from a source you trust.

    >>> import pickle, tempfile
    >>> with tempfile.NamedTemporaryFile(suffix=".pkl", delete=False) as f:
    ...     pickle.dump({"labels": [0, 1]}, f)
    >>> unpickle(f.name)
    {'labels': [0, 1]}
    >>> with open(f.name, "r+b") as g:
    ...     _ = g.truncate(10)
    >>> unpickle(f.name)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ....pkl cannot be read as a pickle (...): it is corrupted or incomplete.
    >>> os.remove(f.name)
    """
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except _PICKLE_ERRORS as error:
        raise ValueError(f"{path} cannot be read as a pickle ({error}): it is corrupted or incomplete.") from None


def text(value):
    """`value` as `str`: byte strings (Python 2 pickles) decoded as latin-1.

    >>> text(b"n01532829"), text("n01532829")
    ('n01532829', 'n01532829')
    """
    return value.decode("latin1") if isinstance(value, bytes) else str(value)
