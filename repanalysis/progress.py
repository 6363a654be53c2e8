"""Progress bars: one tqdm bar on stderr for every step that can take more than a few seconds.

A bar is shown only when stderr is a terminal (tqdm's ``disable=None``) and the caller has not switched it
off (``enabled=False``: the command line's ``--quiet``), so logs, pipes and tests stay clean. Each bar gives
the item rate (``images/s``, ``replicates/s``...). A bottom module: any floor may use it.
"""
from __future__ import annotations

import sys
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def _options(desc: str, unit: str, enabled: bool) -> dict:
    return {"desc": desc, "unit": unit, "dynamic_ncols": True, "file": sys.stderr, "disable": None if enabled else True}


def progress_bar(total: int | None = None, *, desc: str, unit: str = "it", enabled: bool = True, initial: int = 0,
                 unit_scale: bool = False):
    """A tqdm bar on stderr (``update(n)``, ``close()``, usable as a context manager); a disabled one when
    ``enabled`` is False or stderr is not a terminal (then every call on it is a no-op)."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit_scale=unit_scale, **_options(desc, unit, enabled))


def track(iterable: Iterable[T], *, desc: str, unit: str = "it", total: int | None = None,
          enabled: bool = True) -> Iterator[T]:
    """``iterable`` with a progress bar (see :func:`progress_bar`); ``total`` defaults to ``len(iterable)``."""
    from tqdm import tqdm

    return tqdm(iterable, total=total, **_options(desc, unit, enabled))
