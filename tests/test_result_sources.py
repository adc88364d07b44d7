"""Every number README.md and docs/ quote as measured has a recorded line of benchmarks/results/ behind it.

A measured number is a decimal number, or an integer with a unit of measure (%, x, s, ms,
minutes, KiB/MiB/GiB, tasks/s, episodes/s), outside code. It has a source when a value of
some recorded line, rounded to the digits printed, equals it (as is, as a percentage of a
fraction, in minutes of a count of seconds, in KiB of a count of bytes). A paragraph or table
row that cites a paper ("et al."), or a section whose heading says "published", quotes papers
instead, and version numbers are not measurements.
"""

import ast
import glob
import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md", *sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))]
UNIT = r"(?:\s?%|x\b|×|\s(?:s|ms|minutes?|KiB|MiB|GiB|tasks/s|episodes/s)\b)"
MEASURED = re.compile(r"(?<![\w.\-/])(\d+\.\d+(?![\d.])|\d+(?=" + UNIT + r"))")
VERSION = re.compile(r"(?:Python|TensorFlow|Keras|PyTorch|learn2learn|LiteRT|torch|CUDA|version|v)\s?$")


def recorded_values(results_dir):
    lines = []
    for path in glob.glob(os.path.join(results_dir, "*.jsonl")):
        with open(path) as f:
            lines += [json.loads(line) for line in f if line.strip()]
    return recorded_values_of(lines)


def recorded_values_of(lines):
    """Every number in `lines` (recorded JSON lines), nested ones included, sorted."""
    values = set()

    def walk(value):
        if isinstance(value, bool):
            return
        if isinstance(value, (int, float)):
            values.add(float(value))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for line in lines:
        walk(line)
    return sorted(values)


def blocks(text):
    """Prose paragraphs and table rows of a Markdown text, without code, link targets, comments, or sections
    under a heading that says their numbers are published ones."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    text = re.sub(r"^(#+) [^\n]*[Pp]ublished[^\n]*\n.*?(?=^\1 |\Z)", "", text, flags=re.S | re.M)
    for paragraph in re.split(r"\n\s*\n", text):
        lines = paragraph.splitlines()
        rows = [line for line in lines if line.lstrip().startswith("|")]
        yield from rows
        prose = " ".join(line for line in lines if not line.lstrip().startswith("|"))
        if prose.strip():
            yield prose


def has_source(number, values):
    digits = len(number.split(".")[1]) if "." in number else 0
    target, tolerance = float(number), 0.5 * 10 ** -digits + 1e-9
    return any(abs(candidate - target) <= tolerance
               for value in values for candidate in (value, 100 * value, value / 60, value / 1024))


def numbers_without_source(text, values):
    missing = []
    for block in blocks(text):
        if "et al." in block:  # a figure copied from the paper it names
            continue
        for match in MEASURED.finditer(block):
            if VERSION.search(block[:match.start()]):
                continue
            if not has_source(match.group(1), values):
                start = max(0, match.start() - 60)
                missing.append(f"{match.group(1)} in '...{block[start:match.end() + 20]}...'")
    return missing


VALUES = recorded_values(os.path.join(ROOT, "benchmarks", "results"))


def test_every_measured_number_in_readme_and_docs_has_a_recorded_line():
    missing = {page: numbers_without_source(open(os.path.join(ROOT, page)).read(), VALUES) for page in PAGES}
    missing = {page: numbers for page, numbers in missing.items() if numbers}
    assert not missing, json.dumps(missing, indent=1)


EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "examples", "*.py")))


@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_every_example_says_what_it_takes_and_reaches_from_a_recorded_line_of_its_own(path):
    name = os.path.basename(path)
    docstring = ast.get_docstring(ast.parse(open(path).read()))
    expected = [part for part in re.split(r"\n\s*\n", docstring) if part.startswith("Expected on")]
    assert len(expected) == 1, f"{name}: its docstring needs one paragraph 'Expected on ...' (time and results)"
    files = re.findall(r"benchmarks/results/([\w.]+)\.jsonl", expected[0])
    assert files, f"{name}: the 'Expected' paragraph names no results file"
    values = []
    for file in files:
        with open(os.path.join(ROOT, "benchmarks", "results", f"{file}.jsonl")) as f:
            lines = [json.loads(line) for line in f if line.strip()]
        values += recorded_values_of([line for line in lines if line.get("script", "").startswith(f"examples/{name}")])
    assert values, f"{name}: no line of {files} ran this example"
    assert numbers_without_source(expected[0], sorted(values)) == []


def test_the_check_finds_a_number_without_a_line_and_accepts_the_others():
    values = [0.9564, 1465.1, 466944, 2.01]
    text = """A run scored 95.64% +- 0.38 in 24.4 minutes (1465 s), 2.01x the peer, with a file of 456 KiB.

| learner | 5-way 1-shot |
|---|---|
| MAML | 95.64% |
| MAML++ | 96.93% |

Python 3.11 and TensorFlow 2.21 are versions; `--learning-rate 3e-3 --steps 1234.5` is code.
MAML (Finn et al. 2017) reported 98.7% on the full background set.

A table row of an invented run scores 12.34 in 7 s.

## Published numbers

| MAML | 98.7% |

### Of one paper

| ProtoNet | 49.42 |

## Ours

Measured 3.25x."""
    missing = numbers_without_source(text, values)
    assert [entry.split(" in ")[0] for entry in missing] == ["0.38", "96.93", "12.34", "7", "3.25"]


def test_the_benchmark_tables_match_their_results_files():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "report.py"), "--check"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["stale"] == []


def test_a_table_is_rendered_from_the_newest_line_and_a_stale_one_is_found(tmp_path):
    results, page = tmp_path / "results", tmp_path / "page.md"
    results.mkdir()
    line = {"benchmark": "sine", "train_steps": 100, "train_inner_steps": 2, "multi_step_loss": True,
            "mse_0step": 3.21, "mse_1step": 0.75, "mse_5step": 0.5, "mse_10step": 0.45, "train_seconds": 9.5,
            "date": "2026-01-02", "commit": "abc1234", "cpu": "2 cores", "command": "python benchmarks/sine.py"}
    (results / "sine.jsonl").write_text(json.dumps(line) + "\n")
    page.write_text("Before.\n\n<!-- report: sine -->\nold table\n<!-- /report -->\n\nAfter.\n")

    def report(*args):
        return subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "report.py"), "--results-dir",
                               str(results), *args, str(page)], capture_output=True, text=True, timeout=120)

    assert report().returncode == 0
    text = page.read_text()
    assert "old table" not in text and text.startswith("Before.") and text.endswith("After.\n")
    assert "| `python benchmarks/sine.py` | 100 | 2 | yes | 1 | 3.21 | 0.75 | 0.5 | 0.45 | 9.5 |" in text
    assert "2026-01-02, commit abc1234, 2 cores" in text
    assert report("--check").returncode == 0
    with open(results / "sine.jsonl", "a") as f:  # a newer run of the same command replaces the row
        f.write(json.dumps(dict(line, mse_1step=0.7, date="2026-01-03")) + "\n")
    checked = report("--check")
    assert checked.returncode == 1 and json.loads(checked.stdout)["stale"] == [os.path.relpath(page, ROOT)]
    assert report().returncode == 0 and "| 0.7 |" in page.read_text() and "| 0.75 |" not in page.read_text()
