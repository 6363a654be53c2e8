"""Figures: functions that draw a Result on a matplotlib Axes (``ax=None``) and return the Axes."""
from repanalysis.plot.style import OKABE_ITO, apply_style, get_ax, model_colors, save_figure, subplots

__all__ = ["OKABE_ITO", "apply_style", "get_ax", "model_colors", "save_figure", "subplots"]
