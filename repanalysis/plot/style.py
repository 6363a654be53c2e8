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
# Models cycle through Okabe-Ito without vermillion, which is kept for "over-confident" / "wrong" marks.
MODEL_COLORS = [c for c in OKABE_ITO if c != "#D55E00"]
# Classes: Paul Tol's "muted" scheme (colour-blind-safe, no colour shared with MODEL_COLORS; the pale sand
# moved back so that 3-class plots get strong colours) plus a dark grey, and a marker per class so that classes
# stay distinguishable without colour. 10 colours x 11 markers: the (colour, marker) pair is unique for up to
# 110 classes.
CLASS_COLORS = ["#CC6677", "#332288", "#117733", "#88CCEE", "#882255", "#44AA99", "#999933", "#AA4499",
                "#DDCC77", "#555555"]
CLASS_MARKERS = ["o", "s", "^", "D", "v", "P", "<", ">", "p", "h", "*"]
NEUTRAL = "#7F7F7F"
ANNOTATION_FONTSIZE = 8   # numbers printed on bars and under images

STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 8,
    "legend.title_fontsize": 8,
    "figure.titlesize": 11,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "axes.prop_cycle": matplotlib.cycler(color=MODEL_COLORS),
    "image.cmap": "viridis",
}


def apply_style() -> None:
    """Set the project's matplotlib rc parameters (idempotent)."""
    matplotlib.rcParams.update(STYLE)


def model_colors(names: Sequence[str], colors: dict[str, str] | None = None) -> dict[str, str]:
    """A colour per model name, in order of appearance. ``colors``: a map already made for the whole run
    (figure savers compute it once from every model), kept as is; names it lacks get the next free colours."""
    out = dict(colors or {})
    free = [c for c in MODEL_COLORS if c not in out.values()] or MODEL_COLORS
    new = [name for name in dict.fromkeys(names) if name not in out]
    out.update({name: free[i % len(free)] for i, name in enumerate(new)})
    return out


def class_styles(classes: Sequence[int]) -> dict[int, tuple[str, str]]:
    """(colour, marker) per class index, by position in ``classes``; never a model colour."""
    return {int(c): (CLASS_COLORS[i % len(CLASS_COLORS)], CLASS_MARKERS[i % len(CLASS_MARKERS)])
            for i, c in enumerate(classes)}


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
