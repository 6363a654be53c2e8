"""Figures: functions that draw a Result on a matplotlib Axes (``ax=None``) and return the Axes."""
from repanalysis.plot.style import (CLASS_COLORS, MODEL_COLORS, OKABE_ITO, apply_style, class_styles, get_ax,
                                    model_colors, save_figure, subplots)

__all__ = ["CLASS_COLORS", "MODEL_COLORS", "OKABE_ITO", "apply_style", "class_styles", "get_ax", "model_colors",
           "save_figure", "subplots"]
