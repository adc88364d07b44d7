import json
import os
import subprocess
import sys


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


def test_onednn_cpu_kernels_turned_on_by_default(tmp_path):
    result = import_in_fresh_process({"KERAS_HOME": str(tmp_path)}, "import keras_meta; " + ONEDNN,
                                     drop=("TF_ENABLE_ONEDNN_OPTS",))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "1 True"


def test_users_onednn_choice_kept(tmp_path):
    result = import_in_fresh_process({"KERAS_HOME": str(tmp_path), "TF_ENABLE_ONEDNN_OPTS": "0"},
                                     "import keras_meta; " + ONEDNN)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "0 False"


def test_tensorflow_imported_first_is_left_as_it_is(tmp_path):
    result = import_in_fresh_process({"KERAS_HOME": str(tmp_path)}, "import tensorflow, keras_meta; " + ONEDNN,
                                     drop=("TF_ENABLE_ONEDNN_OPTS",))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("None ")
