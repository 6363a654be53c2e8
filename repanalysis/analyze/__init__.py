"""Analyses: pure functions of arrays (logits, features, labels) returning Result dataclasses.

Each family lives in its own module (logits, geometry, projection, embed, collapse, transfer,
calibration, confidence, cam); import from there, e.g. ``from repanalysis.analyze import logits``.
"""
import importlib as _importlib

_MODULES = ("logits", "geometry", "projection", "embed", "collapse", "transfer", "calibration",
            "confidence", "cam", "localisation")


def __getattr__(name):
    if name in _MODULES:
        module = _importlib.import_module(f"repanalysis.analyze.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'repanalysis.analyze' has no attribute {name!r}")
