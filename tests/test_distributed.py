"""Every learner under `tf.distribute`: two replicas and two workers give one device's training.

The runs happen in subprocesses (`tests/distributed_runs.py`), since devices and
clusters must be set up before TensorFlow starts. Float32 tolerance: a step under
a strategy sums the replicas' gradients and batch-norm moments in another order,
and synchronised moments are `E[x^2] - E[x]^2` where one device computes
`E[(x - E[x])^2]`; both differ from one device by float32 rounding, which over two
steps stayed below 2e-6 of the largest weight change (Matching Networks with
full context embeddings, whose LSTMs amplify it most); the bound is 2e-5.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tests", "distributed_runs.py")
LEARNERS = ["protonet", "protonet_clipped", "matching", "matching_fce", "r2d2", "meta_network",
            "embedding_meta_network", "maml", "fomaml", "maml_truncated", "maml_recompute", "mamlpp", "meta_sgd",
            "anil", "reptile", "imaml"]
RELATIVE_TOLERANCE = 2e-5
pytestmark = pytest.mark.xdist_group("distributed")  # one test process runs this module's shared runs once


def distributed_benchmark():
    """benchmarks/distributed.py as a module (it sets up local clusters too)."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        return __import__("distributed")
    finally:
        sys.path.pop(0)


def run(mode, out, env=None, **kwargs):
    return subprocess.Popen([sys.executable, SCRIPT, mode, str(out)], env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def finish(process, timeout=600):
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-4000:]


@pytest.fixture(scope="session")  # once per test process, however its tests are ordered
def mirrored(tmp_path_factory):
    out = tmp_path_factory.mktemp("mirrored")
    finish(run("mirrored", out))
    return out, json.loads((out / "mirrored.json").read_text())


@pytest.fixture(scope="session")  # once per test process, however its tests are ordered
def workers(tmp_path_factory):
    out = tmp_path_factory.mktemp("workers")
    cluster = {"worker": [f"localhost:{port}" for port in distributed_benchmark().free_ports(2)]}
    processes = [run("worker", out, env={"TF_CONFIG": json.dumps({"cluster": cluster,
                                                                  "task": {"type": "worker", "index": i}})})
                 for i in range(2)]
    try:
        for process in processes:
            finish(process)
    finally:
        for process in processes:
            process.kill()
    return out, [json.loads((out / f"worker{i}.json").read_text()) for i in range(2)]


@pytest.mark.parametrize("name", LEARNERS)
def test_two_replicas_train_as_one_device(mirrored, name):
    _, report = mirrored
    entry = report[name]
    assert entry["update_max"] > 1e-3  # the steps changed the weights
    assert entry["max_difference"] <= RELATIVE_TOLERANCE * entry["update_max"], entry
    assert entry["replicas_identical"]  # batch-norm statistics included


def test_gradient_clipping_is_global(mirrored):
    single, two_replicas = mirrored[1]["protonet_clipped"]["trainable_update_norms"]
    # two SGD(0.5) steps of gradients clipped to norm 1e-3: at most 1e-3 in all, as on one device
    assert two_replicas == pytest.approx(single, rel=1e-4) and two_replicas <= 1e-3 * (1 + 1e-5)
    assert two_replicas > 0.5e-3  # clipping was active on both steps (each step moved 5e-4 along one direction)


@pytest.mark.parametrize("name", ["protonet", "maml", "reptile"])
def test_evaluation_prediction_and_adaptation_under_replicas(mirrored, name):
    entry = mirrored[1][name]
    assert entry["eval_episodes"] == 10 and entry["eval_matches_one_device"]
    assert entry["predict_rows"] == 6 and np.isfinite(entry["keras_evaluate"])
    assert entry["adapt_difference"] < 1e-5 and entry["predict_on_batch_difference"] < 1e-5


@pytest.mark.parametrize("name", LEARNERS)
def test_two_workers_end_identical_and_as_one_device(mirrored, workers, name):
    out, reports = workers
    weights = [np.load(out / f"worker{i}_{name}.npz") for i in range(2)]
    for key in weights[0].files:
        np.testing.assert_array_equal(weights[0][key], weights[1][key])
    single = np.load(mirrored[0] / f"single_{name}.npz")
    count = len(weights[0].files)
    start, reference = [single[f"arr_{i}"] for i in range(count)], [single[f"arr_{i}"] for i in range(count, 2 * count)]
    update = max(np.abs(r - s).max() for r, s in zip(reference, start, strict=True))
    difference = max(np.abs(weights[0][f"arr_{i}"] - reference[i]).max() for i in range(count))
    assert difference <= RELATIVE_TOLERANCE * update
    assert all(report[name]["replicas_identical"] for report in reports)


@pytest.mark.parametrize("name", ["protonet", "maml", "reptile"])
def test_evaluation_under_workers_counts_every_episode_once(workers, name):
    for report in workers[1]:
        entry = report[name]
        assert entry["eval_episodes"] == 10 and entry["eval_matches_one_device"]
        assert entry["adapt_difference"] < 1e-5 and np.isfinite(entry["keras_evaluate"])


RESUME_SCRIPT = os.path.join(ROOT, "tests", "resume_runs.py")
RESUME_CASES = [("protonet", "one_device", "kill"), ("maml", "one_device", "kill_in_save"),
                ("protonet", "mirrored", "kill"), ("maml", "mirrored", "kill")]


def resume_run(how, case, out):
    name, strategy, _ = case
    os.makedirs(out, exist_ok=True)
    return subprocess.run([sys.executable, RESUME_SCRIPT, how, name, strategy, str(out)], capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="session")  # once per test process, however its tests are ordered
def resumed_runs(tmp_path_factory):
    """Per case: an uninterrupted run, and a run killed then started again, in processes two at a time."""
    import concurrent.futures

    def case_runs(case):
        out = tmp_path_factory.mktemp("_".join(case))
        full = resume_run("full", case, out / "full")
        killed = resume_run(case[2], case, out / "interrupted")
        backup_dir = out / "interrupted" / "backup"
        backups = sorted(os.listdir(backup_dir)) if backup_dir.exists() else []
        resumed = resume_run("resume", case, out / "interrupted")
        return out, full, killed, backups, resumed

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        return dict(zip(RESUME_CASES, pool.map(case_runs, RESUME_CASES), strict=True))


@pytest.mark.parametrize("case", RESUME_CASES, ids=["-".join(case) for case in RESUME_CASES])
def test_killed_run_resumes_bit_identical(resumed_runs, case):
    out, full, killed, backups, resumed = resumed_runs[case]
    assert full.returncode == 0, full.stderr[-3000:]
    assert killed.returncode == -9, killed.stderr[-3000:]  # SIGKILL
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    if case[2] == "kill_in_save":  # died writing the second epoch's backup: the first one is still the latest
        assert "epoch-000001" in backups and ".epoch-000002.partial" in backups
    else:
        assert "epoch-000002" in backups
    expected, actual = np.load(out / "full" / "full.npz"), np.load(out / "interrupted" / "resume.npz")
    assert expected.files == actual.files
    for key in expected.files:
        np.testing.assert_array_equal(actual[key], expected[key])
