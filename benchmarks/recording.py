"""Where benchmark results live: each script appends its JSON line to `benchmarks/results/<name>.jsonl`.

Every number quoted in README.md and docs/ comes from a line of those files
(`tests/test_result_sources.py` checks it), and the tables of
docs/benchmarks.md are rendered from them (`python benchmarks/report.py`).

    parser = argparse.ArgumentParser()
    add_results_argument(parser)
    args = parser.parse_args()
    print(json.dumps(record("sine", {"mse_1step": 0.64}, args.results_dir)))

A recorded line carries, besides the script's own keys, the `date` (UTC), the
`commit` it ran (`+changes` when its code had uncommitted changes), the
`cpu` and the `command`. The folder is `--results-dir` (default
`$KERAS_META_RESULTS_DIR`, else `benchmarks/results`); `--results-dir ''`
prints the line without recording it.
"""

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_DIR = os.path.join(HERE, "results")


def default_results_dir():
    return os.environ.get("KERAS_META_RESULTS_DIR", DEFAULT_DIR)


def writable_folder(path):
    """`path` if its results can be written there ('' for none): checked before a benchmark runs, not after."""
    if not path:
        return path
    if os.path.exists(path) and not os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"{path!r} is a file, not a folder; name a folder (or '' to record nothing)")
    folder = path
    while not os.path.exists(folder):  # the nearest existing folder is where it will be created
        folder = os.path.dirname(os.path.abspath(folder))
    if not os.access(folder, os.W_OK):
        raise argparse.ArgumentTypeError(f"{path!r} cannot be written; name a writable folder (or '' to record "
                                         "nothing)")
    return path


def add_results_argument(parser):
    parser.add_argument("--results-dir", default=default_results_dir(), metavar="DIR", type=writable_folder,
                        help="append the JSON line to DIR/<benchmark>.jsonl (default: benchmarks/results, "
                             "or $KERAS_META_RESULTS_DIR); '' records nothing")


def cpu_description():
    """`N cores`, plus `AVX-512` or `AVX2` when /proc/cpuinfo tells: the two train at very different speeds."""
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        pass
    vector = "AVX-512" if " avx512f" in flags else "AVX2" if " avx2" in flags else None
    return f"{os.cpu_count()} cores" + (f", {vector}" if vector else "")


def commit(root=ROOT):
    """The checked-out commit, `+changes` when its code differs from it; None outside a git checkout.

    Only the code counts (`keras_meta/` and `benchmarks/`): recorded lines in `benchmarks/results/` do not
    change what runs.
    """
    def git(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    try:
        head = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no", "--", "keras_meta", "benchmarks",
                      ":(exclude)benchmarks/results")
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+changes" if changed else "")


def command_line(argv=None):
    """`python benchmarks/<script>.py <arguments>`, as typed from the repository root."""
    argv = sys.argv if argv is None else argv
    script = os.path.relpath(os.path.abspath(argv[0]), ROOT)
    return shlex.join(["python", script, *argv[1:]])


OUTPUT_OPTIONS = ("--verbose", "--results-dir", "--save")  # where output goes, not what the run measures


def run_options(line, leave_out=OUTPUT_OPTIONS):
    """The options of the run behind a recorded line, as a string: its `options` when it has them (lines of
    `compare.py`), else the arguments of its `command`, without the options in `leave_out` (each with its value).

    >>> run_options({"command": "python benchmarks/omniglot.py --algo r2d2 --flips --steps 600 --verbose 0"})
    '--algo r2d2 --flips --steps 600'
    """
    if "options" in line or "command" not in line:
        return line.get("options") or ""
    words, kept = shlex.split(line["command"])[2:], []
    while words:
        word = words.pop(0)
        if word.split("=")[0] in leave_out:
            if "=" not in word and words:
                words.pop(0)
            continue
        kept.append(word)
    return shlex.join(kept)


def record(name, result, results_dir):
    """`result` with date, commit, CPU and command added, appended to `results_dir/<name>.jsonl` unless
    `results_dir` is empty. Returns the line as a dict."""
    line = dict(result)
    line.setdefault("date", datetime.datetime.now(datetime.timezone.utc).date().isoformat())
    line.setdefault("commit", commit())
    line.setdefault("cpu", cpu_description())
    line.setdefault("command", command_line())
    if results_dir:
        os.makedirs(results_dir, exist_ok=True)
        with open(os.path.join(results_dir, f"{name}.jsonl"), "a") as f:
            f.write(json.dumps(line) + "\n")
    return line


def read(name, results_dir=DEFAULT_DIR):
    """The recorded lines of benchmark `name`, oldest first ([] when there are none)."""
    path = os.path.join(results_dir, f"{name}.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
