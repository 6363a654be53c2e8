"""Analyses: pure functions of arrays (logits, features, labels) returning Result dataclasses.

Each family lives in its own module (logits, geometry, projection, embed, collapse, transfer,
calibration, confidence, cam); import from there, e.g. ``from repanalysis.analyze import logits``.
"""
from repanalysis._lazy import submodule_getattr

_MODULES = ("logits", "geometry", "projection", "embed", "collapse", "transfer", "calibration",
            "confidence", "cam", "localisation", "frames", "paired", "resample", "per_class", "dynamics",
            "cka", "mergeable")


__getattr__ = submodule_getattr(__name__, _MODULES, globals())
