"""CKA heatmaps: every pair of models (:class:`CKAResult`) and the layers of two models (:class:`LayerCKAResult`).

One colour scale for every CKA figure: viridis (perceptually uniform and readable with colour-vision
deficiencies) fixed to [0, 1], the colour bar labelled "linear CKA", each cell annotated with its value in a
colour that contrasts with the cell.
"""
from __future__ import annotations

import numpy as np

from repanalysis.analyze.cka import CKAResult, LayerCKAResult
from repanalysis.plot.style import ANNOTATION_FONTSIZE, check_result, get_ax, literal, wrap_name

CKA_CMAP = "viridis"
CBAR_LABEL = "linear CKA"
MAX_ANNOTATED = 24        # rows or columns beyond which cells are too small for their values


def _method_text(result) -> str:
    if result.method == "minibatch":
        return f"minibatch, {result.n_batches} x {result.batch_size} rows"
    return f"exact, n = {result.n:,}"


def _heatmap(ax, matrix: np.ndarray, rows, cols, *, annotate: bool, digits: int):
    """Draw ``matrix`` on ``ax`` on the fixed [0, 1] scale, NaN cells blank, with a labelled colour bar."""
    import matplotlib as mpl

    m = np.asarray(matrix, dtype=float)
    image = ax.imshow(np.ma.masked_invalid(m), cmap=CKA_CMAP, vmin=0.0, vmax=1.0, aspect="equal",
                      interpolation="nearest")
    ax.grid(False)
    ax.set_xticks(range(m.shape[1]), [literal(wrap_name(c)) for c in cols], rotation=45 if m.shape[1] > 3 else 0,
                  ha="right" if m.shape[1] > 3 else "center")
    ax.set_yticks(range(m.shape[0]), [literal(wrap_name(r)) for r in rows])
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    bar = ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label(CBAR_LABEL)
    if annotate and max(m.shape) <= MAX_ANNOTATED:
        cmap = mpl.colormaps[CKA_CMAP]
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                v = m[i, j]
                if not np.isfinite(v):
                    ax.text(j, i, "n/a", ha="center", va="center", fontsize=ANNOTATION_FONTSIZE, color="black")
                    continue
                r, g, b, _ = cmap(float(np.clip(v, 0, 1)))
                dark = 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.5     # relative luminance of the cell
                ax.text(j, i, f"{v:.{digits}f}", ha="center", va="center", fontsize=ANNOTATION_FONTSIZE,
                        color="white" if dark else "black")
    return ax


def _figsize(n_rows: int, n_cols: int) -> tuple[float, float]:
    return (max(3.6, 1.1 + 0.75 * n_cols), max(3.0, 0.9 + 0.6 * n_rows))


def plot_cka_heatmap(result: CKAResult, ax=None, *, annotate: bool = True, digits: int = 3):
    """Heatmap of the CKA between every pair of models: rows and columns are the models (in ``result.names``
    order), the colour is the linear CKA on a fixed [0, 1] scale with its colour bar, each cell annotated.
    Returns the Axes.

    Example::

        >>> ax = plot_cka_heatmap(cka_matrix([ce, ls, maxsup]))      # doctest: +SKIP
    """
    check_result(result, CKAResult, "plot_cka_heatmap")
    m = len(result.names)
    ax = get_ax(ax, figsize=_figsize(m, m))
    _heatmap(ax, result.matrix, result.names, result.names, annotate=annotate, digits=digits)
    ax.set_xlabel("model")
    ax.set_ylabel("model")
    ax.set_title(f"Linear CKA of penultimate features ({_method_text(result)})")
    return ax


def plot_layer_cka(result: LayerCKAResult, ax=None, *, annotate: bool = True, digits: int = 2):
    """Layer-by-layer heatmap: row i is layer i of ``result.model_a`` (first layer at the top), column j layer j of
    ``result.model_b``; the colour is the linear CKA of the two layers' pooled outputs on a fixed [0, 1] scale,
    each cell annotated. Returns the Axes."""
    check_result(result, LayerCKAResult, "plot_layer_cka")
    ax = get_ax(ax, figsize=_figsize(len(result.layers_a), len(result.layers_b)))
    _heatmap(ax, result.matrix, result.layers_a, result.layers_b, annotate=annotate, digits=digits)
    ax.set_xlabel(f"layer of {literal(result.model_b)}")
    ax.set_ylabel(f"layer of {literal(result.model_a)}")
    ax.set_title(f"Linear CKA, {literal(result.model_a)} vs {literal(result.model_b)} ({_method_text(result)})")
    return ax
