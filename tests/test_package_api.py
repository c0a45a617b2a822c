"""The top-level names of ``import qtutor as qt`` (loaded lazily) are what the README and notebooks call."""
from __future__ import annotations

import subprocess
import sys
import types

import pytest

import qtutor as qt

FUNCTIONS = ("load_model", "perplexity", "quantize_model", "footprint", "banner", "setup_notebook")
MODULES = ("data", "viz", "synth", "check", "notebook")


@pytest.mark.parametrize("name", FUNCTIONS)
def test_lazy_functions_are_functions_in_a_fresh_interpreter(name):
    # a fresh process: nothing else has imported the submodule, so the lazy path itself is what is tested
    code = f"import qtutor as qt, inspect; f = qt.{name}; assert inspect.isfunction(f), type(f); print(f.__module__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", MODULES)
def test_lazy_modules_are_modules(name):
    assert isinstance(getattr(qt, name), types.ModuleType)


def test_an_unknown_name_says_so():
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        qt.nonexistent  # noqa: B018
