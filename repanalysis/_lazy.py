"""Sub-modules of a package reachable as attributes, imported on first use (matplotlib, sklearn load late)."""
from __future__ import annotations

import importlib


def submodule_getattr(package: str, names, namespace: dict):
    """A module ``__getattr__`` that imports ``package.<name>`` for each of ``names`` on first access and keeps
    it in ``namespace`` (the package's globals()); any other name is an AttributeError, as usual."""
    names = frozenset(names)

    def __getattr__(name: str):
        if name in names:
            module = importlib.import_module(f"{package}.{name}")
            namespace[name] = module
            return module
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
