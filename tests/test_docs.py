"""The code blocks of the docs pages run as written (pages whose examples are quick)."""

import os
import re

import pytest

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")


@pytest.mark.parametrize("page", ["datasets.md", "gradient_based_learners.md", "functional.md",
                                  "metric_learners.md", "meta_networks.md", "few_shot_ops.md", "distributed.md",
                                  "reliability.md", "monitoring.md", "writing_a_learner.md",
                                  "finetune_baseline.md", "backbones.md"])
def test_docs_code_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open(os.path.join(DOCS, page)) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)
    assert blocks, f"{page} has no Python example"
    namespace = {}
    for block in blocks:
        exec(compile(block, page, "exec"), namespace)


# Pages whose examples train or evaluate for minutes run shortened; each shortened text must still be on its page.
SHORTER_TRAINING = {
    "README.md": {"epochs=5, steps_per_epoch=200": "epochs=1, steps_per_epoch=2",
                  "epochs=10, steps_per_epoch=100": "epochs=1, steps_per_epoch=2",
                  "ways=5, shots=1)": "ways=5, shots=1, num_episodes=10)",
                  "dataset(batch_size=16)": "dataset(batch_size=2)"},
    "docs/prototypical_networks.md": {"epochs=5, steps_per_epoch=200": "epochs=1, steps_per_epoch=2",
                                      "num_episodes=100": "num_episodes=10"},
    "docs/evaluation.md": {"num_episodes=600)": "num_episodes=10)"},
    "docs/episodes.md": {"epochs=2, steps_per_epoch=20": "epochs=1, steps_per_epoch=2",
                         "epochs=1, steps_per_epoch=20": "epochs=1, steps_per_epoch=2",
                         "num_episodes=50": "num_episodes=10"},
}


@pytest.mark.parametrize("page", sorted(SHORTER_TRAINING))
def test_long_pages_code_blocks_run_with_shorter_training(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open(os.path.join(os.path.dirname(DOCS), page)) as f:
        text = f.read()
    for written, shorter in SHORTER_TRAINING[page].items():
        assert written in text, f"{page} no longer says {written!r}: update SHORTER_TRAINING"
        text = text.replace(written, shorter)
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, f"{page} has no Python example"
    namespace = {}
    for block in blocks:
        exec(compile(block, page, "exec"), namespace)
    assert namespace["learner"] is not None


def test_every_test_the_reliability_table_names_exists():
    root = os.path.dirname(DOCS)
    with open(os.path.join(DOCS, "reliability.md")) as f:
        named = re.findall(r"`(tests/\w+\.py)::(\w+)`", f.read())
    assert len(named) >= 20
    for path, name in named:
        with open(os.path.join(root, path)) as f:
            assert re.search(rf"^def {name}\(", f.read(), flags=re.M), f"{path}::{name} does not exist"
