"""The code blocks of the docs pages run as written (pages whose examples are quick)."""

import os
import re

import pytest

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")


@pytest.mark.parametrize("page", ["episodes.md", "datasets.md", "gradient_based_learners.md", "functional.md",
                                  "metric_learners.md", "meta_networks.md", "few_shot_ops.md", "distributed.md"])
def test_docs_code_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open(os.path.join(DOCS, page)) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)
    assert blocks, f"{page} has no Python example"
    namespace = {}
    for block in blocks:
        exec(compile(block, page, "exec"), namespace)
