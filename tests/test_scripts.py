"""The example and benchmark scripts run end to end (with tiny settings)."""

import json
import os
import subprocess
import sys

import keras
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(path, *args, cwd=ROOT):
    result = subprocess.run([sys.executable, os.path.join(ROOT, path), *args], cwd=cwd,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_omniglot_example_trains_evaluates_and_saves(tmp_path):
    out = run_script("examples/omniglot_protonet.py", "--output-dir", str(tmp_path), "--steps", "20",
                     "--episodes", "10")
    results = json.loads((tmp_path / "results.json").read_text())
    assert {"acc_5w1s", "ci95_5w1s", "acc_20w1s", "ci95_20w1s", "train_seconds"} <= set(results)
    assert 0.0 <= results["acc_5w1s"] <= 1.0
    for name in ("protonet.keras", "adapted_5way_classifier.keras", "results.json"):
        assert str(tmp_path / name) in out
    classifier = keras.saving.load_model(str(tmp_path / "adapted_5way_classifier.keras"))
    assert classifier.predict(np.zeros((2, 28, 28, 1), "float32"), verbose=0).shape == (2, 5)


def test_omniglot_benchmark_prints_one_json_line(tmp_path):
    save = str(tmp_path / "learner.keras")
    out = run_script("benchmarks/omniglot.py", "--steps", "10", "--eval-episodes", "10", "--save", save,
                     "--verbose", "0")
    results = json.loads(out.strip().splitlines()[-1])
    assert {"algo", "acc_5w1s", "ci95_5w1s", "acc_20w1s", "ci95_20w1s", "train_seconds"} <= set(results)
    assert results["test_alphabets"] == ["Japanese_(katakana)", "Sanskrit", "Tagalog"]
    assert os.path.exists(save)


def test_final_model_run_only_trains(tmp_path):
    out = run_script("benchmarks/omniglot.py", "--train-splits", "small1,small2", "--steps", "5",
                     "--save", str(tmp_path / "final.keras"), "--verbose", "0")
    results = json.loads(out.strip().splitlines()[-1])
    assert "acc_5w1s" not in results and os.path.exists(results["saved"])
