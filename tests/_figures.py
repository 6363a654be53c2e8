"""Figure-layout helpers for tests: where text lands on the canvas."""
from __future__ import annotations

import numpy as np


def label_outlines(ax):
    """Each visible x tick label's outline in pixels: its unrotated box turned about its anchor by its rotation."""
    from matplotlib.path import Path

    ax.figure.canvas.draw()
    renderer = ax.figure.canvas.get_renderer()
    outlines = []
    for t in ax.get_xticklabels():
        if not t.get_text() or not t.get_visible():
            continue
        angle = np.radians(t.get_rotation())
        t.set_rotation(0)
        box = t.get_window_extent(renderer)
        t.set_rotation(np.degrees(angle))
        ax0, ay0 = t.get_transform().transform(t.get_position())
        corners = np.array([[box.x0, box.y0], [box.x1, box.y0], [box.x1, box.y1], [box.x0, box.y1]]) - (ax0, ay0)
        turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        outlines.append(Path(corners @ turn.T + (ax0, ay0), closed=True))
    return outlines
