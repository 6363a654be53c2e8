"""Tidy (long) pandas frames of Results: one row per model and metric, for notebooks and seaborn.

Every Result's ``.to_frame()`` is built here, so all of them share one layout::

    model | <context columns> | metric | value | [ci_low | ci_high] | [n]

``ci_low`` / ``ci_high`` appear when the Result has intervals (NaN for a metric without one); ``n`` is the
number of samples the numbers were computed on. pandas is imported inside the functions only, so importing
repanalysis stays fast.

Example::

    >>> tidy_frame("CE", {"ece": 0.031, "nll": 0.12}, {"ece": (0.02, 0.04)}, n=1000)
      model metric  value  ci_low  ci_high     n
    0    CE    ece  0.031    0.02     0.04  1000
    1    CE    nll  0.120     NaN      NaN  1000
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping

from repanalysis.errors import DataError

# the model name a Result without one is shown under (as in the tables)
DEFAULT_MODEL = "model"


def _number(value) -> float:
    """A metric value as a float; None (a number that does not apply, e.g. NC3 without W) -> NaN."""
    return math.nan if value is None else float(value)


def tidy_rows(model: str | None, values: Mapping[str, float], intervals: Mapping[str, tuple] | None = None, *,
              n: int | None = None, **context) -> list[dict]:
    """The rows of :func:`tidy_frame` as dicts (to put rows of several contexts in one frame)."""
    model = DEFAULT_MODEL if model is None else str(model)
    rows = []
    for metric, value in values.items():
        row = {"model": model, **context, "metric": str(metric), "value": _number(value)}
        if intervals is not None:
            lo, hi = intervals.get(metric, (None, None))
            row["ci_low"], row["ci_high"] = _number(lo), _number(hi)
        if n is not None:
            row["n"] = int(n)
        rows.append(row)
    return rows


def rows_frame(rows: Iterable[dict]):
    """A pandas DataFrame of row dicts (columns: the union of their keys, in order of first appearance)."""
    import pandas as pd

    return pd.DataFrame.from_records(list(rows))


def tidy_frame(model: str | None, values: Mapping[str, float], intervals: Mapping[str, tuple] | None = None, *,
               n: int | None = None, **context):
    """One model's metrics as a tidy DataFrame, one row per metric.

    model: the model's name (None -> "model"); values: {metric: value} (None -> NaN); intervals: {metric:
    (low, high)} or None (then no ci columns; a metric missing from it gets NaN); n: samples (an ``n`` column);
    context: constant columns placed between ``model`` and ``metric`` (e.g. ``split="test"``).
    """
    return rows_frame(tidy_rows(model, values, intervals, n=n, **context))


def points_frame(model: str | None, coords, labels, sample_index, classes, class_names):
    """2-D coordinates of one model's samples (projections, embeddings) as a tidy DataFrame, one row per sample.

    coords (n, 2); labels (n,) class index of each point; sample_index (n,) its source row; classes /
    class_names: the class indices and their display names. Columns: model, sample, label, class (the name),
    x, y, the columns of the Results' ``to_rows()`` CSV.
    """
    import numpy as np
    import pandas as pd

    coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    names = dict(zip((int(c) for c in classes), class_names))
    return pd.DataFrame({"model": [DEFAULT_MODEL if model is None else str(model)] * len(labels),
                         "sample": np.asarray(sample_index, dtype=np.int64).reshape(-1), "label": labels,
                         "class": [names[int(y)] for y in labels], "x": coords[:, 0], "y": coords[:, 1]})


def concat_frames(frames: Iterable):
    """Stack DataFrames row-wise with a fresh index; a column missing from some frames is NaN there."""
    import pandas as pd

    frames = list(frames)
    if not frames:
        raise DataError("no frames to concatenate; expected at least one Result")
    return pd.concat(frames, ignore_index=True, sort=False)
