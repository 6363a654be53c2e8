"""Path arguments of the public entry points: one check, one message, for every function that takes a path."""
from __future__ import annotations

import os
from pathlib import Path

from repanalysis.errors import DataError


def as_path(value, what: str = "path") -> Path:
    """``value`` (a str or os.PathLike) -> Path; DataError naming ``what`` for anything else (None, numbers,
    lists, bytes) and for an empty string, instead of pathlib's TypeError or a silent ``Path('.')``."""
    if isinstance(value, (str, os.PathLike)) and not isinstance(value, bytes):
        text = os.fspath(value)
        if isinstance(text, str):
            if not text:
                raise DataError(f"{what} is an empty string; expected a file path")
            return Path(text)
    kind = "None" if value is None else type(value).__name__
    raise DataError(f"{what}: expected a file path (str or os.PathLike); got {kind}")
