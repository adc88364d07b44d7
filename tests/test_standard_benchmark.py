"""benchmarks/standard.py: the published protocols, skipping datasets that are absent."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_standard(*args, env=None):
    return subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "standard.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env=env)


def test_absent_data_is_skipped_with_what_to_fetch(tmp_path):
    result = run_standard("--dataset", "mini_imagenet", "--data-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert line["dataset"] == "mini_imagenet" and "acc_5w1s" not in line
    assert str(tmp_path / "mini_imagenet") in line["skipped"] and "data absent, skipped" in result.stderr


def test_a_small_resnet12_trains_and_is_tested_on_the_bundled_omniglot(tmp_path):
    save = tmp_path / "protonet.keras"
    result = run_standard("--dataset", "omniglot_small", "--algo", "protonet", "--backbone", "resnet12",
                          "--resnet-filters", "8,8,8,8", "--steps", "30", "--episodes", "20",
                          "--allow-fewer-episodes", "--verbose", "0", "--save", str(save))
    assert result.returncode == 0, result.stderr[-3000:]
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert line["train_classes"] == 136 * 4 and line["test_classes"] == 106 * 4  # rotations are classes
    for setting, chance in (("5w1s", 0.2), ("5w5s", 0.2), ("20w1s", 0.05), ("20w5s", 0.05)):
        assert 1.5 * chance < line[f"acc_{setting}"] <= 1.0 and line[f"ci95_{setting}"] > 0  # it learned
    assert line["acc_5w5s"] > line["acc_5w1s"] - 0.05 and save.exists()


def test_a_gradient_learner_is_tested_at_its_own_ways_only(tmp_path):
    result = run_standard("--dataset", "omniglot_small", "--algo", "fomaml", "--backbone", "conv4", "--filters", "8",
                          "--steps", "3", "--inner-steps", "1", "--eval-inner-steps", "1", "--episodes", "4",
                          "--allow-fewer-episodes", "--verbose", "0")
    assert result.returncode == 0, result.stderr[-3000:]
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"acc_5w1s", "acc_5w5s"} <= set(line) and "acc_20w1s" not in line
    assert set(line["not_run"]) == {"20w1s", "20w5s"} and "--ways 20" in line["not_run"]["20w1s"]
    assert line["train_steps"] == 3


def test_fewer_than_600_test_episodes_need_saying_so():
    result = run_standard("--dataset", "omniglot_small", "--episodes", "100")
    assert result.returncode == 2 and "at least 600 episodes" in result.stderr
    result = run_standard("--dataset", "omniglot_small", "--algo", "maml", "--backbone", "resnet12",
                          "--drop-rate", "0.1")
    assert result.returncode == 2 and "--drop-rate is for the metric learners" in result.stderr
