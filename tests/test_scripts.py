"""The example and benchmark scripts run end to end (with tiny settings)."""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import keras
import numpy as np
import pytest

import keras_meta

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(path, *args, cwd=ROOT):
    result = subprocess.run([sys.executable, os.path.join(ROOT, path), *args], cwd=cwd,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_omniglot_example_trains_evaluates_and_saves(tmp_path):
    out = run_script("examples/omniglot_protonet.py", "--output-dir", str(tmp_path), "--steps", "20",
                     "--episodes", "10", "--validation-episodes", "10", "--checkpoint-every", "8")
    assert "Training tasks: 20-way 1-shot, 5 queries per class, from 1088 classes" in out
    results = json.loads((tmp_path / "results.json").read_text())
    assert {"acc_5w1s", "ci95_5w1s", "acc_20w1s", "ci95_20w1s", "train_seconds"} <= set(results)
    assert results["acc_5w1s"] > 0.35 and results["acc_20w1s"] > 0.15  # chance: 0.2 and 0.05
    for name in ("protonet.keras", "adapted_5way_classifier.keras", "results.json", "history.png", "episode.png",
                 "embeddings.png", "accuracy_vs_shots.png"):
        assert str(tmp_path / name) in out
        assert (tmp_path / name).stat().st_size > 0
    classifier = keras.saving.load_model(str(tmp_path / "adapted_5way_classifier.keras"))
    assert classifier.predict(np.zeros((2, 28, 28, 1), "float32"), verbose=0).shape == (2, 5)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["settings"]["steps"] == 20 and config["versions"]["keras_meta"] == keras_meta.__version__
    rows = (tmp_path / "history.csv").read_text().strip().splitlines()
    assert "val_5way_1shot_accuracy" in rows[0].split(",") and len(rows) == 1 + 1  # header and one epoch
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["epoch001_batch00008.keras", "epoch001_batch00016.keras"]
    assert any(files for _, _, files in os.walk(tmp_path / "tensorboard"))


def test_omniglot_benchmark_prints_one_json_line(tmp_path):
    save = str(tmp_path / "learner.keras")
    out = run_script("benchmarks/omniglot.py", "--steps", "10", "--eval-episodes", "10", "--save", save,
                     "--verbose", "0", "--flips")
    results = json.loads(out.strip().splitlines()[-1])
    assert results["train_classes"] == 136 * 4 * 2  # small1's characters, rotated, and mirrored
    assert {"algo", "acc_5w1s", "ci95_5w1s", "acc_20w1s", "ci95_20w1s", "train_seconds"} <= set(results)
    assert results["test_alphabets"] == ["Japanese_(katakana)", "Sanskrit", "Tagalog"]
    assert results["acc_5w1s"] > 0.35 and results["acc_20w1s"] > 0.15  # chance: 0.2 and 0.05
    assert results["acc_5w5s"] > results["acc_5w1s"] and results["ci95_5w5s"] > 0  # more shots, more accurate
    assert os.path.exists(save)


def test_omniglot_benchmark_runs_the_fine_tuning_baseline(tmp_path):
    save = str(tmp_path / "baseline.keras")
    results = last_json_line(run_script("benchmarks/omniglot.py", "--algo", "finetune-cosine", "--steps", "100",
                                        "--eval-episodes", "10", "--save", save, "--verbose", "0"))
    assert results["algo"] == "finetune-cosine" and results["train_steps"] == 100
    assert results["acc_5w1s"] > 0.35 and results["acc_20w1s"] > 0.15 and results["acc_5w5s"] > 0.35
    assert results["train_classes"] == 136 * 4 and "train_ways" not in results  # whole classes, no episodes
    reloaded = keras.saving.load_model(save)
    assert type(reloaded).__name__ == "FineTuneBaseline" and reloaded.head == "cosine"
    assert reloaded.num_classes == 136 * 4  # every rotation of every small1 character is a class


def test_final_model_run_only_trains(tmp_path):
    out = run_script("benchmarks/omniglot.py", "--train-splits", "small1,small2", "--steps", "5",
                     "--save", str(tmp_path / "final.keras"), "--verbose", "0")
    results = json.loads(out.strip().splitlines()[-1])
    assert "acc_5w1s" not in results and os.path.exists(results["saved"])


def usage_error(monkeypatch, capsys, script, *args, entry="main"):
    """The message of the usage error (exit status 2) a benchmark script gives for `args`, parsed in this process."""
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1"))  # restored after
    module = import_benchmark(script)
    monkeypatch.setattr(sys, "argv", [f"{script}.py", *args])
    with pytest.raises(SystemExit) as exited:
        getattr(module, entry)()
    assert exited.value.code == 2
    return capsys.readouterr().err


def test_omniglot_benchmark_rejects_metric_learner_flags_for_gradient_learners(monkeypatch, capsys):
    for args, message in ((["--algo", "maml", "--pretrain-epochs", "1"], "--pretrain-epochs is for the metric"),
                          (["--algo", "reptile", "--multi-step-loss"], "--multi-step-loss is for maml"),
                          (["--algo", "r2d2", "--cosine-scale", "10"], "--cosine-scale are for --algo matching"),
                          (["--algo", "protonet", "--parallel-tasks", "2"], "--parallel-tasks is for the learners"),
                          (["--algo", "maml", "--parallel-tasks", "0"], "--parallel-tasks must be at least 1"),
                          (["--algo", "maml", "--intra-op-threads", "-1"], "--intra-op-threads must be at least 0"),
                          (["--algo", "maml", "--parallel-tasks", "all"], "a whole number or auto, got 'all'"),
                          (["--algo", "fomaml", "--recompute-inner-steps"], "--recompute-inner-steps is for maml"),
                          (["--algo", "maml", "--learned-rates", "tensor"], "--learned-rates is for mamlpp, metasgd"),
                          (["--algo", "fomaml", "--first-order-steps", "0"], "--first-order-steps is for maml,"),
                          (["--algo", "mamlpp", "--first-order-steps", "-1"], "--first-order-steps must be at least")):
        assert message in usage_error(monkeypatch, capsys, "omniglot", *args, entry="parse_args"), args


def test_omniglot_benchmark_defaults_are_per_algorithm_and_explicit_flags_win(monkeypatch):
    omniglot = import_benchmark("omniglot")

    def parsed(*args):
        monkeypatch.setattr(sys, "argv", ["omniglot.py", *args])
        return omniglot.parse_args()

    maml = parsed("--algo", "maml")
    assert (maml.flips, maml.learning_rate, maml.intra_op_threads, maml.train_ways, maml.steps) == (
        True, 3e-3, 1, 5, 4800)
    assert (maml.inner_lr, maml.inner_steps, maml.eval_inner_steps, maml.first_order_steps) == (0.1, 3, 5, 4000)
    metasgd = parsed("--algo", "metasgd")
    assert (metasgd.flips, metasgd.learning_rate, metasgd.steps, metasgd.eval_inner_steps) == (True, 3e-3, 6000, 1)
    fomaml = parsed("--algo", "fomaml")  # smaller inner steps than MAML's
    assert (fomaml.inner_lr, fomaml.inner_steps, fomaml.eval_inner_steps, fomaml.steps) == (0.1, 3, 5, 6000)
    reptile = parsed("--algo", "reptile")
    assert (reptile.flips, reptile.train_shots, reptile.train_queries, reptile.learning_rate) == (True, 10, 1, 1.0)
    anil = parsed("--algo", "anil")
    assert (anil.flips, anil.learning_rate, anil.steps, anil.inner_steps, anil.eval_inner_steps) == (
        True, 3e-3, 6000, 1, 10)
    mine = parsed("--algo", "maml", "--no-flips", "--learning-rate", "1e-3", "--intra-op-threads", "0")
    assert (mine.flips, mine.learning_rate, mine.intra_op_threads) == (False, 1e-3, 0)
    protonet = parsed("--algo", "protonet")
    assert (protonet.flips, protonet.learning_rate, protonet.intra_op_threads, protonet.train_ways) == (
        True, 1e-3, None, 60)
    assert not parsed("--algo", "protonet", "--no-flips").flips
    # --first-order-steps reaches the learner over MAML++'s preset (a third of --steps) and MAML's (none)
    assert omniglot.ALGOS["mamlpp"](parsed("--algo", "mamlpp", "--steps", "600")).first_order_steps == 200
    assert omniglot.ALGOS["mamlpp"](parsed("--algo", "mamlpp", "--steps", "600", "--first-order-steps", "0")
                                    ).first_order_steps == 0
    assert omniglot.ALGOS["maml"](parsed("--algo", "maml", "--first-order-steps", "50")).first_order_steps == 50
    # MAML: first order for five sixths of its steps unless told otherwise
    assert omniglot.ALGOS["maml"](parsed("--algo", "maml", "--steps", "600")).first_order_steps == 500
    assert omniglot.ALGOS["maml"](parsed("--algo", "maml", "--first-order-steps", "0")).first_order_steps == 0
    assert omniglot.ALGOS["metasgd"](parsed("--algo", "metasgd")).first_order_steps is None
    assert (parsed("--algo", "r2d2").spatial_embedding, parsed("--algo", "r2d2", "--no-spatial-embedding")
            .spatial_embedding, parsed("--algo", "metanet").spatial_embedding) == (True, False, False)


def test_omniglot_benchmark_sets_the_matching_cosine_scale(tmp_path):
    save = str(tmp_path / "matching.keras")
    run_script("benchmarks/omniglot.py", "--algo", "matching", "--cosine-scale", "30", "--steps", "2",
               "--eval-episodes", "2", "--save", save, "--verbose", "0")
    assert keras.saving.load_model(save).cosine_scale == 30.0


def last_json_line(out):
    return json.loads(out.strip().splitlines()[-1])


def test_sine_benchmark_prints_the_mse_after_1_5_10_steps():
    results = last_json_line(run_script("benchmarks/sine.py", "--steps", "600", "--seeds", "2", "--eval-tasks", "40",
                                        "--verbose", "0"))
    assert results["seeds"] == [0, 1] and {"mse_1step", "mse_5step", "mse_10step", "train_seconds"} <= set(results)
    for key, digits in (("mse_0step", 4), ("mse_10step", 4), ("train_seconds", 1)):  # the mean of the two runs
        assert len(results[f"{key}_per_seed"]) == 2  # (each rounded as printed: the mean within one last digit)
        assert results[key] == pytest.approx(sum(results[f"{key}_per_seed"]) / 2, abs=1.01 * 10**-digits)
    # adapting to 5 points helps after a short meta-training: below the unadapted model's error, in each run
    for adapted, unadapted in zip(results["mse_10step_per_seed"], results["mse_0step_per_seed"], strict=True):
        assert adapted < 0.85 * unadapted


def test_sine_benchmark_refuses_no_seeds(monkeypatch, capsys):
    assert "--seeds and --steps must be at least 1" in usage_error(monkeypatch, capsys, "sine", "--seeds", "0")


def test_omniglot_benchmark_runs_gradient_based_learners(tmp_path):
    maml_options = ["--steps", "60", "--meta-batch", "4", "--multi-step-loss", "--parallel-tasks", "2",
                    "--intra-op-threads", "1", "--eval-episodes", "20", "--inner-lr", "0.4", "--inner-steps", "1",
                    "--first-order-steps", "0"]  # one traced branch (its default's first-order share: parse test)
    short = ["--steps", "2", "--eval-episodes", "4"]  # the others: their settings reach the saved learner
    for algo, options in (("maml", maml_options), ("reptile", short), ("imaml", [*short, "--meta-batch", "2"]),
                          ("mamlpp", [*short, "--inner-steps", "2", "--recompute-inner-steps", "--meta-batch", "2",
                                      "--learned-rates", "parameter", "--first-order-steps", "0"])):
        save = str(tmp_path / f"{algo}.keras")
        results = last_json_line(run_script("benchmarks/omniglot.py", "--algo", algo, *options,
                                            "--eval-inner-steps", "1", "--save", save, "--verbose", "0"))
        assert results["algo"] == algo and "acc_20w1s" not in results and "acc_5w5s" in results
        if algo == "maml":  # 60 steps of 4 tasks: clearly above chance (0.2) on unseen alphabets
            assert results["acc_5w1s"] > 0.26, results
        reloaded = keras.saving.load_model(save)
        assert reloaded.eval_inner_steps == 1
        if algo == "maml":
            assert reloaded.multi_step_loss and reloaded.parallel_tasks == 2
            assert reloaded.first_order_steps == 0
        else:
            assert reloaded.parallel_tasks == "auto"  # the learners' default
        if algo == "imaml":
            assert (reloaded.regularization, reloaded.cg_steps) == (2.0, 5)
        if algo == "mamlpp":  # the schedules follow --steps
            assert type(reloaded).__name__ == "MAMLPlusPlus" and reloaded.recompute_inner_steps
            assert (reloaded.training_steps, reloaded.inner_steps, reloaded.per_step_batch_norm) == (2, 2, True)
            assert reloaded.learn_inner_learning_rate == "parameter" and reloaded.per_step_inner_learning_rates


def import_throughput():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import throughput
    finally:
        sys.path.pop(0)
    return throughput


def test_throughput_benchmark_prints_tasks_per_second_and_memory():
    results = last_json_line(run_script("benchmarks/throughput.py", "--workloads", "fomaml_k1,protonet",
                                        "--warmup", "1", "--iters", "1", "--intra-op-threads", "1",
                                        "--parallel-tasks", "2"))
    assert results["fomaml_k1_tasks_per_s"] > 0 and results["protonet_episodes_per_s"] > 0
    assert (results["intra_op_threads"], results["parallel_tasks"], results["parallel_tasks_at_once"]) == (1, 2, 2)
    assert results["fomaml_k1_peak_rss_mb"] > 100
    # anonymous memory, sampled from /proc, is part of the resident set (which adds TensorFlow's library pages)
    assert 100 < results["fomaml_k1_peak_anon_mb"] < results["fomaml_k1_peak_rss_mb"]
    assert 0 < results["fomaml_k1_tensors_peak_mb"] < results["fomaml_k1_peak_anon_mb"]
    assert 0 < results["fomaml_k1_import_anon_mb"] < results["fomaml_k1_peak_anon_mb"]
    assert results["fomaml_k1_import_file_mb"] > 0


def test_benchmarks_take_auto_or_a_number_of_parallel_tasks(monkeypatch, capsys):
    options = import_benchmark("options")
    assert options.parallel_tasks("auto") == "auto" and options.parallel_tasks("3") == 3
    with pytest.raises(argparse.ArgumentTypeError, match="a whole number or auto, got 'two'"):
        options.parallel_tasks("two")
    assert "--parallel-tasks and --intra-op-threads must be at least 1" in usage_error(
        monkeypatch, capsys, "throughput", "--parallel-tasks", "0")


def test_throughput_benchmark_measures_onednn_off_too():
    results = last_json_line(run_script("benchmarks/throughput.py", "--workloads", "protonet", "--onednn-off",
                                        "--warmup", "1", "--iters", "1"))
    assert results["protonet_onednn_off_episodes_per_s"] > 0
    ratio = results["protonet_episodes_per_s"] / results["protonet_onednn_off_episodes_per_s"]
    assert abs(results["protonet_onednn_vs_off"] - ratio) <= 0.01 + 0.01 * ratio


def test_throughput_benchmark_alternates_repeats_and_reports_medians(monkeypatch):
    throughput = import_throughput()
    calls = []
    ours, peer = iter([1.0, 3.0, 2.0]), iter([2.0, 2.0, 4.0])

    def fake_ours(name, args, *extra, onednn=True, package=None):
        calls.append("ours")
        return {"per_s": next(ours), "peak_rss_mb": 900.0, "peak_anon_mb": 500.0, "warmup_seconds": 1.0,
                "import_anon_mb": 210.0, "import_file_mb": 310.0, "tensors_peak_mb": 100.0, "onednn": True}

    def fake_peer(python, name, iters, script):
        calls.append("peer")
        return {"throughput_per_s": next(peer), "peak_rss_mib": 600.0, "peak_anon_mib": 450.0}

    monkeypatch.setattr(throughput, "run_ours", fake_ours)
    monkeypatch.setattr(throughput, "run_peer", fake_peer)
    args = argparse.Namespace(repeats=3, jit_compile=False, onednn_off=False, peer="python", iters=1,
                              baseline=None, peer_script="peer.py")
    results = throughput.measure_workload("maml_k1", args)
    assert calls == ["ours", "peer"] * 3
    assert results["maml_k1_tasks_per_s"] == 2.0 and results["maml_k1_learn2learn_tasks_per_s"] == 2.0
    assert results["maml_k1_vs_learn2learn"] == 1.0
    assert results["maml_k1_vs_learn2learn_runs"] == [0.5, 1.5, 0.5]
    assert results["maml_k1_peak_rss_mb"] == 900 and results["maml_k1_learn2learn_peak_rss_mb"] == 600
    assert results["maml_k1_peak_anon_mb"] == 500 and results["maml_k1_learn2learn_peak_anon_mb"] == 450
    assert (results["maml_k1_import_anon_mb"], results["maml_k1_tensors_peak_mb"]) == (210, 100)


def test_throughput_benchmark_runs_no_peer_for_recomputed_steps_and_reports_their_memory(monkeypatch):
    throughput = import_throughput()
    calls = []

    def fake_ours(name, args, *extra, onednn=True, package=None):
        calls.append(name)
        return {"per_s": 1.0, "peak_rss_mb": 900.0, "peak_anon_mb": 500.0, "warmup_seconds": 1.0,
                "import_anon_mb": 210.0, "import_file_mb": 310.0, "tensors_peak_mb": 60.0, "onednn": True}

    monkeypatch.setattr(throughput, "run_ours", fake_ours)
    monkeypatch.setattr(throughput, "run_peer", lambda *a: pytest.fail("learn2learn has no recomputed inner steps"))
    args = argparse.Namespace(repeats=2, jit_compile=False, onednn_off=False, peer="python", iters=1, baseline=None,
                              peer_script="peer.py")
    results = throughput.measure_workload("maml_k10_recompute", args)
    assert calls == ["maml_k10_recompute"] * 2 and "maml_k10_recompute_vs_learn2learn" not in results
    ratio = throughput.with_recompute_ratio(dict(results, maml_k1_tensors_peak_mb=40))
    assert ratio["maml_k10_recompute_tensors_peak_vs_maml_k1"] == 1.5
    assert "maml_k10_recompute_tensors_peak_vs_maml_k1" not in throughput.with_recompute_ratio(results)


def test_throughput_benchmark_compares_with_a_baseline_checkout(monkeypatch, tmp_path):
    throughput = import_throughput()
    calls, speeds = [], iter([2.0, 1.0, 3.0, 3.0, 1.0, 2.0])

    def fake_ours(name, args, *extra, onednn=True, package=None):
        calls.append(package)
        return {"per_s": next(speeds), "peak_rss_mb": 900.0, "peak_anon_mb": 500.0, "warmup_seconds": 1.0,
                "import_anon_mb": 210.0, "import_file_mb": 310.0, "tensors_peak_mb": 100.0, "onednn": True,
                "package": package or "here"}

    monkeypatch.setattr(throughput, "run_ours", fake_ours)
    args = argparse.Namespace(repeats=3, jit_compile=False, onednn_off=False, peer=None, iters=1,
                              baseline=str(tmp_path))
    results = throughput.measure_workload("protonet", args)
    assert calls == [None, str(tmp_path)] * 3  # alternating, the baseline imported from its own checkout
    assert results["protonet_episodes_per_s"] == 2.0 and results["protonet_baseline_episodes_per_s"] == 2.0
    assert results["protonet_vs_baseline_runs"] == [2.0, 1.0, 0.5]
    assert results["protonet_vs_baseline"] == 1.0
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks/throughput.py"), "--baseline",
                             str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "is not a keras-meta checkout" in result.stderr


def test_throughput_benchmark_samples_a_processs_anonymous_memory():
    throughput = import_throughput()
    child = "import time; block = b'x' * (200 * 2**20); time.sleep(0.5); del block; print('done')"
    out, peak_anon_mb = throughput.run_sampled([sys.executable, "-c", child])
    assert out.strip() == "done"
    assert 200 <= peak_anon_mb < 260  # the 200 MiB written, plus the interpreter's own few MiB
    with pytest.raises(subprocess.CalledProcessError):
        throughput.run_sampled([sys.executable, "-c", "raise SystemExit(3)"])


def test_throughput_benchmark_rejects_bad_repeats_and_workloads():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks/throughput.py"), "--repeats", "0"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--repeats must be at least 1" in result.stderr
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks/throughput.py"), "--workloads",
                             "protonet,maml_k2"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "unknown workloads ['maml_k2']" in result.stderr
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks/throughput.py"), "--intra-op-threads",
                             "0"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--intra-op-threads must be at least 1" in result.stderr
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks/throughput.py"), "--warmup", "0"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--warmup and --iters must be at least 1" in result.stderr
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks/throughput.py"), "--peer", sys.executable,
                             "--peer-script", os.path.join(ROOT, "no_such_script.py")],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "KERAS_META_PEER_SCRIPT": ""})
    assert result.returncode == 2 and "--peer needs the learn2learn workload script" in result.stderr


def check_run_folder(run_dir, results=(), figures=(), files=()):
    """The run folder of an example: config.json, history.csv with a row per epoch, tensorboard/, results.json with
    `results` among its keys, and non-empty `figures` (PNG) and `files`; returns the settings in config.json."""
    config = json.loads((run_dir / "config.json").read_text())
    assert config["versions"]["keras_meta"] == keras_meta.__version__
    assert config["settings"]["output_dir"] == str(run_dir)
    rows = (run_dir / "history.csv").read_text().strip().splitlines()
    assert rows[0].startswith("epoch,") and "loss" in rows[0].split(",") and len(rows) >= 2
    assert any(names for _, _, names in os.walk(run_dir / "tensorboard"))
    assert set(results) <= set(json.loads((run_dir / "results.json").read_text()))
    for name in [f"{figure}.png" for figure in figures] + list(files):
        assert (run_dir / name).stat().st_size > 0, name
    return config["settings"]


def test_sine_example_writes_a_plot(tmp_path):
    out = run_script("examples/sine_maml.py", "--output-dir", str(tmp_path), "--steps", "400",
                     "--checkpoint-every", "200")
    assert (tmp_path / "adapted_curves.png").stat().st_size > 10000
    assert str(tmp_path / "adapted_curves.png") in out
    settings = check_run_folder(tmp_path, results=("mse_0step", "mse_1step", "mse_10step", "train_seconds"),
                                figures=("history", "adapted_curves"), files=("maml_sine.keras",))
    assert (settings["steps"], settings["checkpoint_every"]) == (400, 200)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["epoch001_batch00200.keras", "epoch001_batch00400.keras"]
    results = json.loads((tmp_path / "results.json").read_text())
    assert max(results["mse_1step"], results["mse_10step"]) < 0.9 * results["mse_0step"]  # adapting helps


def test_omniglot_maml_and_reptile_examples_run(tmp_path):
    mamlpp = run_script("examples/omniglot_maml.py", "--algo", "mamlpp", "--recompute-inner-steps", "--output-dir",
               str(tmp_path / "mamlpp"), "--steps", "2", "--episodes", "2", "--checkpoint-every", "1", "--flips",
               "--learning-rate", "2e-3", "--queries", "3", "--eval-queries", "4")
    classifier = keras.saving.load_model(str(tmp_path / "mamlpp" / "adapted_5way_classifier.keras"))
    assert classifier.predict(np.zeros((2, 28, 28, 1), "float32"), verbose=0).shape == (2, 5)
    settings = check_run_folder(tmp_path / "mamlpp", ("algo", "acc_5w1s", "ci95_5w1s", "adapted_classifier_accuracy"),
                                figures=("history", "adaptation", "parameter_change"), files=("mamlpp.keras",))
    assert (settings["algo"], settings["steps"], settings["recompute_inner_steps"]) == ("mamlpp", 2, True)
    assert (settings["flips"], settings["learning_rate"], settings["queries"]) == (True, 2e-3, 3)
    assert "Training tasks: 5-way 1-shot, 3 queries per class, from 1088 classes" in mamlpp  # mirror images too
    assert sorted(os.listdir(tmp_path / "mamlpp" / "checkpoints")) == ["epoch001_batch00001.keras",
                                                                       "epoch001_batch00002.keras"]
    learner = keras.saving.load_model(str(tmp_path / "mamlpp" / "mamlpp.keras"))
    assert (type(learner).__name__, learner.recompute_inner_steps, learner.inner_steps) == ("MAMLPlusPlus", True, 3)
    run_script("examples/omniglot_maml.py", "--algo", "fomaml", "--output-dir", str(tmp_path / "fomaml"), "--steps",
               "1", "--episodes", "1", "--eval-queries", "2")
    learner = keras.saving.load_model(str(tmp_path / "fomaml" / "fomaml.keras"))  # first order: smaller steps
    assert (learner.first_order, learner.inner_learning_rate, learner.inner_steps, learner.eval_inner_steps) == (
        True, 0.1, 3, 5)
    reptile = run_script("examples/omniglot_reptile.py", "--output-dir", str(tmp_path / "reptile"), "--steps", "2",
               "--episodes", "2", "--flips", "--learning-rate", "0.5", "--eval-queries", "3")
    settings = check_run_folder(tmp_path / "reptile", ("algo", "acc_5w1s", "ci95_5w1s", "train_seconds"),
                                figures=("history", "adaptation", "parameter_change"), files=("reptile.keras",))
    assert "Training tasks: 5-way 5-shot, 1 queries per class, from 1088 classes" in reptile
    assert (settings["flips"], settings["learning_rate"], settings["eval_queries"]) == (True, 0.5, 3)


def test_gru_next_item_example_reports_ranking_metrics(tmp_path):
    out = run_script("examples/gru_next_item.py", "--steps", "100", "--users", "30", "--output-dir", str(tmp_path))
    results = last_json_line(out)
    for key in ("after_0_steps", "after_3_steps", "baseline_after_0_steps", "baseline_after_3_steps"):
        assert {"acc@1", "recall@5", "mrr", "loss"} <= set(results[key])
    table = results["table"]
    assert set(table) == {"baseline_0_steps", "baseline_3_steps", "maml_0_steps", "maml_3_steps"}
    for row in table.values():
        assert set(row) == {"acc@1", "recall@5", "mrr"} and all(0.0 <= v <= 1.0 for v in row.values())
    assert table["maml_3_steps"]["mrr"] == results["after_3_steps"]["mrr"]
    assert {"maml", "baseline"} <= set(results["train_seconds"])
    # Fine-tuning the baseline on the support sessions changes its predictions.
    assert results["baseline_after_3_steps"]["loss"] != results["baseline_after_0_steps"]["loss"]
    # After 100 meta-training steps, 3 inner steps on 10 sessions already pay off (0.26 against 0.20 and 0.18
    # for these seeds), more than they do for the pooled baseline.
    assert table["maml_3_steps"]["mrr"] > table["maml_0_steps"]["mrr"] + 0.02
    assert table["maml_3_steps"]["mrr"] > table["baseline_3_steps"]["mrr"] + 0.02
    for line in ("baseline, 0 steps", "baseline, 3 steps", "MAML, 0 steps", "MAML, 3 steps"):
        assert line in out
    assert json.loads((tmp_path / "results.json").read_text()) == results
    settings = check_run_folder(tmp_path, figures=("history", "adaptation", "comparison"), files=("maml_gru.keras",))
    assert (settings["steps"], settings["users"]) == (100, 30)
    assert "mrr" in (tmp_path / "history.csv").read_text().splitlines()[0].split(",")


def test_metric_learners_example_trains_adapts_and_saves(tmp_path):
    out = run_script("examples/omniglot_metric_learners.py", "--learner", "metanet", "--output-dir", str(tmp_path),
               "--steps", "2", "--episodes", "4", "--ways", "30", "--queries", "2", "--no-flips", "--eval-queries", "3")
    results = json.loads((tmp_path / "results.json").read_text())
    assert {"acc_5w1s", "acc_20w1s", "adapted_classifier_accuracy"} <= set(results)
    classifier = keras.saving.load_model(str(tmp_path / "adapted_5way_classifier.keras"))  # standard layers only
    assert classifier.predict(np.zeros((2, 28, 28, 1), "float32"), verbose=0).shape == (2, 5)
    assert keras.saving.load_model(str(tmp_path / "metanet.keras")).ways == 30  # room for 30-way training episodes
    settings = check_run_folder(tmp_path, ("learner", "acc_5w1s", "ci95_20w1s", "train_seconds"),
                                figures=("history", "embeddings", "accuracy_vs_shots"))
    assert (settings["learner"], settings["steps"], settings["ways"], settings["flips"]) == ("metanet", 2, 30, False)
    assert "Training tasks: 30-way 1-shot, 2 queries per class, from 544 classes" in out  # no mirror images


def test_metric_learners_example_gives_r2d2_the_wide_embedding(tmp_path):
    run_script("examples/omniglot_metric_learners.py", "--learner", "r2d2", "--output-dir", str(tmp_path),
               "--steps", "2", "--episodes", "4")
    assert keras.saving.load_model(str(tmp_path / "r2d2.keras")).embedding_size == 576
    classifier = keras.saving.load_model(str(tmp_path / "adapted_5way_classifier.keras"))
    assert classifier.predict(np.zeros((2, 28, 28, 1), "float32"), verbose=0).shape == (2, 5)
    check_run_folder(tmp_path, ("learner", "acc_5w1s"), figures=("history", "embeddings", "accuracy_vs_shots"))


def test_comparison_script_runs_missing_learners_and_writes_the_table(tmp_path):
    results, table = tmp_path / "omniglot.jsonl", tmp_path / "comparison.md"
    options = "--steps 2 --eval-episodes 4"  # a row is named by its algorithm and its settings
    results.write_text(json.dumps({"algo": "maml", "options": options, "train_ways": 5, "train_steps": 2,
                                   "train_seconds": 1.0, "acc_5w1s": 0.5, "ci95_5w1s": 0.01}) + "\n")
    out = last_json_line(run_script("benchmarks/compare.py", "--algos", "maml,r2d2", "--results-dir", str(tmp_path),
                                    "--table", str(table), "--steps", "2", "--eval-episodes", "4"))
    lines = results.read_text().splitlines()
    assert [json.loads(line)["algo"] for line in lines] == ["maml", "r2d2"]  # maml had a result: not rerun
    recorded = json.loads(lines[-1])
    assert recorded["command"] == f"python benchmarks/omniglot.py --algo r2d2 --verbose 0 {options}"
    assert recorded["options"] == options and recorded["cpu"].startswith(f"{os.cpu_count()} cores")
    assert [row["learner"] for row in out["rows"]] == [f"r2d2 {options}", f"maml {options}"]
    assert [row["onednn"] for row in out["rows"]] == ["on", "off"]  # the stored maml row has no oneDNN flag
    text = table.read_text()
    assert f"| r2d2 {options} |" in text and f"| maml {options} | 50.00% ± 1.00 |" in text


def test_comparison_names_each_row_by_the_options_of_its_run_and_marks_earlier_defaults():
    compare = import_benchmark("compare")
    common = {"train_ways": 5, "train_seconds": 1.0, "acc_5w1s": 0.5, "ci95_5w1s": 0.01, "onednn": True}
    direct = dict(common, algo="r2d2", train_steps=600,  # recorded by omniglot.py itself: no "options" key
                  command="python benchmarks/omniglot.py --algo r2d2 --flips --steps 600 --verbose 0 --save a.keras")
    maml_defaults = compare.parse_args(["--algo", "maml"])
    today = dict(common, algo="maml", train_steps=maml_defaults.steps, learning_rate=maml_defaults.learning_rate,
                 flips=maml_defaults.flips,
                 command="python benchmarks/omniglot.py --algo maml --results-dir=results")
    earlier = dict(common, algo="fomaml", options="", train_steps=800)  # today's default is thousands of steps
    _, rows = compare.table([direct, today, earlier])
    assert [row["learner"] for row in rows] == ["r2d2 --flips --steps 600", "fomaml (earlier defaults)", "maml"]
    assert compare.at_current_defaults(today) and not compare.at_current_defaults(dict(today, flips=False))


def import_benchmark(name):
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


def test_distributed_benchmark_reports_one_device_and_two_workers():
    results = last_json_line(run_script("benchmarks/distributed.py", "--workloads", "protonet", "--configs",
                                        "one_device,multi_worker", "--warmup", "1", "--steps", "1"))
    assert results["cpu_count"] == os.cpu_count() and results["protonet_batch"] == 2
    assert (results["protonet_one_device_replicas"], results["protonet_multi_worker_replicas"]) == (1, 2)
    for config in ("one_device", "multi_worker"):
        assert results[f"protonet_{config}_tasks_per_s"] > 0 and results[f"protonet_{config}_warmup_seconds"] > 0
        # anonymous memory is part of the resident set, which adds TensorFlow's library pages
        assert 100 < results[f"protonet_{config}_peak_anon_mb"] < results[f"protonet_{config}_peak_rss_mb"]
    for kind in ("peak_rss_mb", "peak_anon_mb"):
        workers = results[f"protonet_multi_worker_{kind}_per_worker"]
        assert len(workers) == 2 and min(workers) > 100
        assert abs(sum(workers) - results[f"protonet_multi_worker_{kind}"]) <= 1
    ratio = results["protonet_multi_worker_tasks_per_s"] / (2 * results["protonet_one_device_tasks_per_s"])
    assert results["protonet_multi_worker_scaling_efficiency"] == pytest.approx(ratio, abs=0.002)
    assert "maml_batch" not in results and "protonet_mirrored_tasks_per_s" not in results


def test_distributed_benchmark_rejects_bad_options():
    for options, message in ((["--configs", "one_device,tpu"], "unknown configs ['tpu']"),
                             (["--workloads", "reptile"], "unknown workloads ['reptile']"),
                             (["--maml-batch", "3"], "--maml-batch must be a positive multiple of 2"),
                             (["--steps", "0"], "--warmup and --steps must be at least 1")):
        result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks/distributed.py"), *options],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and message in result.stderr, (options, result.stderr)


def test_distributed_benchmark_stops_the_other_worker_when_one_fails():
    distributed = import_benchmark("distributed")
    hang = [sys.executable, "-c", "import time; time.sleep(600)"]
    fail = [sys.executable, "-c", "import sys; sys.exit('worker 1 failed')"]
    with pytest.raises(subprocess.CalledProcessError) as error:
        distributed.run_sampled_processes([hang, fail], [None, None], timeout=60)
    assert error.value.cmd == fail and "worker 1 failed" in error.value.stderr
    with pytest.raises(RuntimeError, match="did not finish within 0.5 s"):
        distributed.run_sampled_processes([hang], [None], timeout=0.5)
    child = "import time; block = b'x' * (100 * 2**20); time.sleep(0.5); print('done')"
    (out, peak_mb), = distributed.run_sampled_processes([[sys.executable, "-c", child]], [None], timeout=60)
    assert out.strip() == "done" and 100 <= peak_mb < 160


def test_distributed_maml_example_trains_the_same_on_one_and_two_replicas(tmp_path):
    common = ["--steps", "2", "--episodes", "4", "--batch-size", "4", "--checkpoint-every", "2"]
    run_script("examples/distributed_maml.py", "--output-dir", str(tmp_path / "one"), *common)
    out = run_script("examples/distributed_maml.py", "--output-dir", str(tmp_path / "two"), "--cpu-replicas", "2",
                     *common)
    one, two = (json.loads((tmp_path / run / "results.json").read_text()) for run in ("one", "two"))
    assert (one["strategy"], one["replicas"]) == ("default", 1)
    assert (two["strategy"], two["replicas"]) == ("MirroredStrategy", 2) and "2 replica(s), 2 tasks each" in out
    for results in (one, two):
        assert results["steps"] == 2 and results["episodes"] == 4 and results["resumed_after_epoch"] == 0
        assert 0.0 <= results["acc_5w1s"] <= 1.0 and results["final_train_loss"] > 0
    # the same global batches from the same weights: two replicas train as one device, up to float32 rounding
    assert two["final_train_loss"] == pytest.approx(one["final_train_loss"], rel=1e-4)
    for run in ("one", "two"):
        assert not (tmp_path / run / "backup").exists()  # deleted once training completed
        assert keras.saving.load_model(str(tmp_path / run / "maml.keras")).inner_learning_rate == 0.4
        settings = check_run_folder(tmp_path / run, ("strategy", "acc_5w1s", "final_train_loss"), figures=("history",))
        assert settings["cpu_replicas"] == (2 if run == "two" else 1)
        assert os.listdir(tmp_path / run / "checkpoints") == ["epoch001_batch00002.keras"]
    result = subprocess.run([sys.executable, os.path.join(ROOT, "examples/distributed_maml.py"), "--cpu-replicas",
                             "2", "--batch-size", "3", "--output-dir", str(tmp_path / "bad")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 2 and "--batch-size (3) must be a multiple of the 2 replicas" in result.stderr


def test_tflite_example_writes_a_run_folder(tmp_path):
    run_script("examples/tflite_few_shot.py", "--output-dir", str(tmp_path), "--steps", "3", "--filters", "8",
               "--episodes", "2", "--checkpoint-every", "3")
    settings = check_run_folder(tmp_path, ("max_logit_diff_vs_keras", "size_bytes", "size_bytes_int8",
                                           "size_bytes_adapted", "device_accuracy_5w1s"),
                                files=("adapted_5way.tflite", "prototype_classifier.tflite",
                                       "prototype_classifier_int8.tflite"))
    assert (settings["filters"], settings["steps"]) == (8, 3)
    assert os.listdir(tmp_path / "checkpoints") == ["epoch001_batch00003.keras"]


def test_xla_benchmark_prints_tasks_per_second_with_and_without_xla():
    results = last_json_line(run_script("benchmarks/xla.py", "--learners", "protonet,anil", "--steps", "1",
                                        "--warmup", "1"))
    assert results["benchmark"] == "xla" and results["device"].startswith("/device:")
    assert results["auto_jit_compile"] in (True, False) and (results["steps"], results["warmup"]) == (1, 1)
    for name in ("protonet", "anil"):
        for key in ("tasks_per_s", "xla_tasks_per_s", "xla_vs_graph", "warmup_seconds", "xla_warmup_seconds"):
            assert results[f"{name}_{key}"] > 0, key
        ratio = results[f"{name}_xla_tasks_per_s"] / results[f"{name}_tasks_per_s"]
        assert results[f"{name}_xla_vs_graph"] == pytest.approx(ratio, abs=0.01)
    assert "maml_tasks_per_s" not in results


def test_xla_benchmark_rejects_bad_learners_steps_and_warmup(monkeypatch, capsys):
    for args, message in ((["--learners", "maml,protonet2"], "unknown learners ['protonet2']"),
                          (["--steps", "0"], "--steps and --warmup must be at least 1"),
                          (["--warmup", "0"], "--steps and --warmup must be at least 1")):
        assert message in usage_error(monkeypatch, capsys, "xla", *args), args


def test_sampler_benchmark_reports_every_setting_and_records_its_line(tmp_path):
    results = last_json_line(run_script("benchmarks/sampler.py", "--seconds", "0.5", "--results-dir", str(tmp_path)))
    sampler = import_benchmark("sampler")
    assert results["benchmark"] == "sampler"
    for name, (_, _, _, batch_size) in sampler.SETTINGS.items():
        assert results[f"{name}_episodes_per_s"] >= batch_size, name  # at least one batch counted
    # the printed line is the recorded one, with where and when it ran
    recorded = [json.loads(line) for line in (tmp_path / "sampler.jsonl").read_text().splitlines()]
    assert recorded == [results]
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode == 0:  # a git checkout
        assert results["commit"].split("+")[0] == head.stdout.strip()
    assert results["command"] == "python benchmarks/sampler.py --seconds 0.5 --results-dir " + str(tmp_path)
    assert results["cpu"].startswith(f"{os.cpu_count()} cores") and len(results["date"]) == 10


def test_benchmarks_refuse_a_results_folder_they_cannot_write_before_running(tmp_path):
    (tmp_path / "a_file").write_text("")
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks/sampler.py"), "--results-dir",
                             str(tmp_path / "a_file")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "is a file, not a folder" in result.stderr, result.stderr[-2000:]
    recording = import_benchmark("recording")
    assert recording.writable_folder(str(tmp_path / "new" / "folder")) == str(tmp_path / "new" / "folder")


def test_recorded_commit_is_marked_changed_by_code_changes_only(tmp_path):
    recording = import_benchmark("recording")

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)
    for path in ("keras_meta/core.py", "benchmarks/run.py", "benchmarks/results/run.jsonl", "README.md"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("0\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "start")
    head = recording.commit(str(tmp_path))
    assert head and "+" not in head
    (tmp_path / "benchmarks/results/run.jsonl").write_text("0\n1\n")  # a recorded line: same code
    (tmp_path / "README.md").write_text("1\n")
    assert recording.commit(str(tmp_path)) == head
    (tmp_path / "benchmarks/run.py").write_text("1\n")
    assert recording.commit(str(tmp_path)) == head + "+changes"
    git("checkout", "--", "benchmarks/run.py")
    (tmp_path / "keras_meta/core.py").write_text("1\n")
    assert recording.commit(str(tmp_path)) == head + "+changes"
    with tempfile.TemporaryDirectory() as outside:  # not a git checkout
        assert recording.commit(outside) is None


def test_benchmarks_record_nothing_in_the_repository_during_tests():
    assert os.environ["KERAS_META_RESULTS_DIR"] != os.path.join(ROOT, "benchmarks", "results")
    recording = import_benchmark("recording")
    assert recording.default_results_dir() == os.environ["KERAS_META_RESULTS_DIR"]
    assert recording.record("nothing", {"a": 1}, "")["a"] == 1  # '' prints without recording
    assert not os.path.exists(os.path.join(os.environ["KERAS_META_RESULTS_DIR"], "nothing.jsonl"))


def test_lite_benchmark_files_agree_with_keras(tmp_path):
    results = last_json_line(run_script("benchmarks/lite.py", "--steps", "10", "--episodes", "4",
                                        "--calibration-episodes", "1", "--latency-repeats", "1"))
    assert results["protonet_acc_keras"] > 0.35  # chance: 0.2
    for variant, row in results["protonet"].items():
        assert row["size_bytes"] > 0 and row["latency_ms"] > 0, variant
    assert results["protonet"]["float32"]["agreement_vs_keras"] == 1.0
    assert results["maml"]["float16"]["agreement_vs_float"] >= 0.9  # float16 weights: the float file's answers
