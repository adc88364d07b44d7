import ast
import glob
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def import_in_fresh_process(env_updates, code="import keras_meta, keras; print(keras.backend.backend())", drop=()):
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND" and k not in drop}
    env.update(env_updates)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_tensorflow_chosen_when_user_chose_nothing(tmp_path):
    result = import_in_fresh_process({"KERAS_HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("tensorflow")


def test_explicit_other_backend_raises(tmp_path):
    result = import_in_fresh_process({"KERAS_BACKEND": "jax", "KERAS_HOME": str(tmp_path)})
    assert result.returncode != 0
    assert "KERAS_BACKEND environment variable selects the 'jax'" in result.stderr


def test_keras_json_other_backend_raises(tmp_path):
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "torch"}))
    result = import_in_fresh_process({"KERAS_HOME": str(tmp_path)})
    assert result.returncode != 0 and "selects the 'torch'" in result.stderr


ONEDNN = ("import os; from tensorflow.python.util import _pywrap_util_port as p; "
          "print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'), p.IsMklEnabled())")


def test_importing_keras_meta_leaves_the_onednn_choice_alone(tmp_path):
    """Importing the library sets no TensorFlow variable: the result does not depend on import order."""
    code = ("import os, sys; import keras_meta; import keras; "
            "print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'), 'tensorflow' in sys.modules)")
    result = import_in_fresh_process({"KERAS_HOME": str(tmp_path)}, code, drop=("TF_ENABLE_ONEDNN_OPTS",))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "None True"


@pytest.mark.parametrize("value, expected", [("1", "True"), ("0", "False")])
def test_onednn_enabled_reports_the_users_choice(tmp_path, value, expected):
    result = import_in_fresh_process({"KERAS_HOME": str(tmp_path), "TF_ENABLE_ONEDNN_OPTS": value},
                                     "import keras_meta; print(keras_meta.onednn_enabled())")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == expected


SCRIPTS = sorted(glob.glob(os.path.join(ROOT, "examples", "*.py"))
                 + glob.glob(os.path.join(ROOT, "benchmarks", "*.py")))


@pytest.mark.parametrize("path", SCRIPTS, ids=os.path.basename)
def test_scripts_choose_onednn_before_tensorflow_loads(path):
    """Each script that imports TensorFlow (directly or through keras-meta) sets the variable first."""
    tree = ast.parse(open(path).read())
    heavy = ("keras", "keras_meta", "tensorflow")

    def sets_onednn(node):
        return isinstance(node, ast.Expr) and "TF_ENABLE_ONEDNN_OPTS" in ast.unparse(node)

    def imports_heavy(node):
        names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        return any(name.split(".")[0] in heavy for name in names)

    scopes = [tree.body] + [node.body for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)]
    for body in scopes:
        chosen = False
        for node in body:
            chosen = chosen or sets_onednn(node)
            if imports_heavy(node):
                assert chosen, f"{os.path.basename(path)} line {node.lineno} imports TensorFlow before choosing oneDNN"
                break
