"""The documentation site builds with `mkdocs build --strict`, and its API reference has every public name."""

import importlib
import os
import re
import subprocess
import sys
import types

import keras_meta

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MKDOCS = os.path.join(os.path.dirname(sys.executable), "mkdocs")


def public_packages():
    """The modules of `keras_meta.__all__`, and `keras_meta.plots`, which is imported on its own."""
    names = [name for name in keras_meta.__all__ if isinstance(getattr(keras_meta, name), types.ModuleType)]
    return sorted(names + ["plots"])


def public_names(module):
    """`module.__all__`, or else the classes and functions it defines under names without a leading underscore."""
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [name for name, value in vars(module).items()
            if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__]


def test_site_builds_strictly_with_every_public_name(tmp_path):
    site = tmp_path / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    build = subprocess.run([MKDOCS, "build", "--strict", "--site-dir", str(site)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, f"mkdocs build --strict failed:\n{build.stderr}"

    missing = []
    for package in public_packages():
        module = importlib.import_module(f"keras_meta.{package}")
        page = site / "api" / package / "index.html"
        assert page.is_file(), f"no API page for keras_meta.{package} (docs/api/{package}.md)"
        ids = set(re.findall(r'\bid="([^"]+)"', page.read_text()))
        assert module.__name__ in ids, f"docs/api/{package}.md does not document {module.__name__}"
        names = public_names(module)
        assert names, module.__name__
        missing += [f"{module.__name__}.{name}" for name in names if f"{module.__name__}.{name}" not in ids]
    top = set(re.findall(r'\bid="([^"]+)"', (site / "api" / "keras_meta" / "index.html").read_text()))
    missing += [f"keras_meta.{name}" for name in keras_meta.__all__
                if not name.startswith("_") and not isinstance(getattr(keras_meta, name), types.ModuleType)
                and f"keras_meta.{name}" not in top]
    assert not missing, f"public names missing from the API reference: {missing}"
