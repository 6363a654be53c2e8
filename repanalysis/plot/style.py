"""One figure style for the whole project: colour-blind-safe palette, labelled axes, PNG + PDF output.

Every plotting function takes ``ax=None`` (creating a figure when absent) and returns the Axes;
colours for models come from :func:`model_colors` so a model keeps its colour across figures.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

import matplotlib

from repanalysis.extract.store import umask_mode

if not os.environ.get("DISPLAY") and os.environ.get("MPLBACKEND") is None:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# Okabe & Ito (2008) colour-blind-safe palette.
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
NEUTRAL = "#7F7F7F"

STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "axes.prop_cycle": matplotlib.cycler(color=OKABE_ITO),
    "image.cmap": "viridis",
}


def apply_style() -> None:
    """Set the project's matplotlib rc parameters (idempotent)."""
    matplotlib.rcParams.update(STYLE)


def model_colors(names: Sequence[str]) -> dict[str, str]:
    """A stable colour per model name, in order of appearance."""
    return {name: OKABE_ITO[i % len(OKABE_ITO)] for i, name in enumerate(dict.fromkeys(names))}


def get_ax(ax=None, figsize=(5.0, 4.0)):
    """Return ``ax`` or a fresh Axes in a new styled figure."""
    if ax is not None:
        return ax
    apply_style()
    _, ax = plt.subplots(figsize=figsize)
    return ax


def subplots(nrows: int = 1, ncols: int = 1, **kwargs):
    """plt.subplots with the project style applied."""
    apply_style()
    kwargs.setdefault("squeeze", False)
    return plt.subplots(nrows, ncols, **kwargs)


def save_figure(fig, path_stem: str | os.PathLike, formats: Sequence[str] = ("png", "pdf"),
                close: bool = True) -> list[Path]:
    """Save ``fig`` as ``<stem>.png`` and ``<stem>.pdf`` (atomically: temp file then rename)."""
    stem = Path(path_stem)
    if stem.suffix in (".png", ".pdf"):
        stem = stem.with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        target = stem.with_name(f"{stem.name}.{fmt}")
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=f".{fmt}")
        os.close(fd)
        try:
            # no creation date in the PDF: the same figure gives the same bytes (diffable, cacheable)
            fig.savefig(tmp, format=fmt, metadata={"CreationDate": None} if fmt == "pdf" else None)
            umask_mode(tmp)
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        written.append(target)
    if close:
        plt.close(fig)
    return written
