"""Figures: functions that draw a Result on a matplotlib Axes (``ax=None``) and return the Axes.

Each family lives in its own module (logits, geometry, calibration, cam), reachable as an attribute too:
``ra.plot.calibration.reliability_figure(...)``.
"""
from repanalysis._lazy import submodule_getattr

from repanalysis.plot.style import (CLASS_COLORS, MODEL_COLORS, OKABE_ITO, apply_style, class_styles, get_ax,
                                    model_colors, save_figure, subplots)

__all__ = ["CLASS_COLORS", "MODEL_COLORS", "OKABE_ITO", "apply_style", "class_styles", "get_ax", "model_colors",
           "save_figure", "subplots"]

_MODULES = ("logits", "geometry", "calibration", "cam", "style", "cka", "dynamics", "per_class")


__getattr__ = submodule_getattr(__name__, _MODULES, globals())
