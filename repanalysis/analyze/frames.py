"""One tidy pandas DataFrame from several Results (any mix of models and analyses), for notebooks.

Every Result has ``.to_frame()`` (columns ``model``, context such as ``split`` / ``score``, ``metric``,
``value``, ``ci_low`` / ``ci_high`` where it has intervals, ``n``); :func:`results_frame` stacks them.

Example::

    >>> from repanalysis.analyze.calibration import calibrate_dumps
    >>> from repanalysis.analyze.frames import results_frame
    >>> df = results_frame(calibrate_dumps([ce, ls, maxsup], n_boot=200))
    >>> df[df.metric == "ece"]           # one row per model, with its bootstrap interval
"""
from __future__ import annotations

from typing import Iterable

from repanalysis.errors import DataError
from repanalysis.frames import concat_frames


def results_frame(results: Iterable):
    """``pandas.concat`` of each result's ``.to_frame()``, in order, with a fresh index.

    results: Results of any analysis (a list of them, or a single one). A column that only some of them have
    (``ci_low`` of calibration, ``split`` of separation, ...) is NaN in the rows of the others. Coordinate
    Results (projections, embeddings) give one row per sample instead of per metric; mix them only with
    their own kind. Raises DataError for an empty list or an object without ``to_frame``.
    """
    if hasattr(results, "to_frame"):
        results = [results]
    results = list(results)
    for r in results:
        if not callable(getattr(r, "to_frame", None)):
            raise DataError(f"results_frame takes Results with a .to_frame() method; got {type(r).__name__}")
    return concat_frames(r.to_frame() for r in results)
