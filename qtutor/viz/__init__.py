"""Figures (pure functions of data) and the ipywidgets apps built on them."""
from qtutor.viz import figures

__all__ = ["figures", "widgets"]


def __getattr__(name):
    if name == "widgets":  # ipywidgets loads only when an app is wanted
        import importlib

        return importlib.import_module("qtutor.viz.widgets")
    raise AttributeError(name)
