"""One figure style for the whole project: colour-blind-safe palette, labelled axes, PNG + PDF output.

Every plotting function takes ``ax=None`` (creating a figure when absent) and returns the Axes;
colours for models come from :func:`model_colors` so a model keeps its colour across figures.
"""
from __future__ import annotations

import errno
import os
import re
import warnings
from pathlib import Path
from typing import Sequence

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from repanalysis.errors import DataError
from repanalysis.outputs import umask_mode
from repanalysis.outputs import output_set, place, remove_files, temp_file

if not os.environ.get("DISPLAY") and os.environ.get("MPLBACKEND") is None:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# Okabe & Ito (2008) colour-blind-safe palette.
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
# Models take Okabe-Ito without vermillion, which is kept for "over-confident" / "wrong" marks; from the 8th
# model on, Paul Tol's vibrant magenta and his "dark" scheme (colour-blind-safe, darker than every Okabe-Ito colour
# but black, so lightness alone tells them apart; none is a class colour or a mark's). 13 distinct model colours;
# past that, model_colors warns that colours repeat.
EXTRA_MODEL_COLORS = ["#EE3377", "#222255", "#663333", "#225522", "#666633", "#225555"]
MODEL_COLORS = [c for c in OKABE_ITO if c != "#D55E00"] + EXTRA_MODEL_COLORS
# Classes: Paul Tol's "muted" scheme (colour-blind-safe, no colour shared with MODEL_COLORS; the pale sand
# moved back so that 3-class plots get strong colours) plus a dark grey, and a marker per class so that classes
# stay distinguishable without colour. 10 colours x 11 markers: the (colour, marker) pair is unique for up to
# 110 classes.
CLASS_COLORS = ["#CC6677", "#332288", "#117733", "#88CCEE", "#882255", "#44AA99", "#999933", "#AA4499",
                "#DDCC77", "#555555"]
CLASS_MARKERS = ["o", "s", "^", "D", "v", "P", "<", ">", "p", "h", "*"]
NEUTRAL = "#7F7F7F"
ANNOTATION_FONTSIZE = 8   # numbers printed on bars and under images
WRAP_CHARS = 12           # model tick labels longer than this wrap at "_", "-", "/" and spaces
TITLE_CHARS = 30          # a model name in a panel title or row label longer than this gets lines of its own

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
    free = [c for c in MODEL_COLORS if c not in out.values()]
    new = [name for name in dict.fromkeys(names) if name not in out]
    if len(new) > len(free):     # only here can two models share a colour
        warnings.warn(f"{len(out) + len(new)} models but {len(MODEL_COLORS)} distinct model colours: some models "
                      "share a colour (their names tell them apart)", RuntimeWarning, stacklevel=2)
        free = free + MODEL_COLORS
    out.update({name: free[i % len(free)] for i, name in enumerate(new)})
    return out


def class_styles(classes: Sequence[int]) -> dict[int, tuple[str, str]]:
    """(colour, marker) per class index, by position in ``classes``; never a model colour."""
    return {int(c): (CLASS_COLORS[i % len(CLASS_COLORS)], CLASS_MARKERS[i % len(CLASS_MARKERS)])
            for i, c in enumerate(classes)}


# --- checks of what a plotting function is given -------------------------------------------------------------
def _article(name: str) -> str:
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def describe(value) -> str:
    """A short name of what a caller passed, for an error line: "an EmbeddingResult", "'x' (str)", "None"."""
    if value is None:
        return "None"
    if isinstance(value, (str, bytes, int, float)):
        text = repr(value)
        return f"{text if len(text) <= 40 else text[:37] + '...'} ({type(value).__name__})"
    return _article(type(value).__name__)


def _kind_name(kind) -> str:
    return " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))


def check_result(result, kind, what: str):
    """``result`` itself; DataError naming ``what`` (the function) unless it is a ``kind`` (a class or a tuple)."""
    if not isinstance(result, kind):
        raise DataError(f"{what}: expected {_article(_kind_name(kind))}; got {describe(result)}")
    return result


def check_results(results, kind, what: str) -> list:
    """``results`` as a list: a list or tuple of ``kind`` (one per model), or one ``kind`` (a one-element list).
    DataError naming ``what`` when it is empty, another container (a generator, a dict) or holds another kind."""
    name = _kind_name(kind)
    if isinstance(results, kind):
        return [results]
    if not isinstance(results, (list, tuple)):
        raise DataError(f"{what}: expected a list of {name} (one per model); got {describe(results)}")
    if not results:
        raise DataError(f"{what}: no results to plot; expected one {name} per model")
    for i, r in enumerate(results):
        if not isinstance(r, kind):
            raise DataError(f"{what}: expected a list of {name} (one per model); item {i} is {describe(r)}")
    return list(results)


def check_ax(ax, what: str = "ax"):
    """``ax`` itself; DataError unless it is None or a matplotlib Axes."""
    if ax is not None and not isinstance(ax, Axes):
        raise DataError(f"{what} must be a matplotlib Axes or None; got {describe(ax)}")
    return ax


def finite(values, field: str, name) -> np.ndarray:
    """``values`` (1-D, or 2-D with one point per row) without NaN or infinite entries (rows); the array itself
    when every one is finite. DataError naming the result ``name`` and ``field`` when nothing finite is left."""
    a = np.asarray(values)
    ok = np.isfinite(a) if a.ndim < 2 else np.isfinite(a).all(axis=1)
    if ok.all():
        return a
    if not ok.any():
        raise DataError(f"{name}: every {field} value is NaN or infinite; expected finite values to plot")
    return a[ok]


def literal(text):
    """User text (a model, class, image or split name) for a title, legend or tick label: "$" escaped so that
    matplotlib draws it as written, never as mathtext. None stays None."""
    return None if text is None else str(text).replace("$", r"\$")


def wrap_name(name: str, width: int = WRAP_CHARS) -> str:
    """A long model name on balanced lines of about ``width`` characters, broken after "_", "-", "/" or a
    space ("ce_e8_n4000_s0_train" -> "ce_e8_n4000_\ns0_train"); a name without such breaks stays whole."""
    name = str(name)
    tokens = [t for t in re.split(r"(?<=[_\-/ ])", name) if t]
    if len(name) <= width or len(tokens) < 2:
        return name
    n_lines = -(-len(name) // width)
    for limit in range(-(-len(name) // n_lines), len(name) + 1):   # the narrowest greedy wrap into n_lines
        lines = [""]
        for t in tokens:
            lines[-1:] = [lines[-1] + t] if not lines[-1] or len(lines[-1] + t) <= limit else [lines[-1], t]
        if len(lines) <= n_lines:
            return "\n".join(line.rstrip() for line in lines)
    return name


def name_title(name, rest: str, width: int = TITLE_CHARS) -> str:
    """A panel title naming a model: "<name>: <rest>" when the name is short, else the name wrapped
    (:func:`wrap_name`, lines of about ``width`` characters) over ``rest`` on a line of its own, so that a long
    name never runs into the next panel's title. ``name`` is drawn literally."""
    name = str(name)
    if len(name) <= width:
        return f"{literal(name)}: {rest}"
    return f"{literal(wrap_name(name, width))}\n{rest}"


def get_ax(ax=None, figsize=(5.0, 4.0)):
    """Return ``ax`` (checked: a matplotlib Axes) or a fresh Axes in a new styled figure."""
    if check_ax(ax) is not None:
        return ax
    apply_style()
    _, ax = plt.subplots(figsize=figsize)
    return ax


def subplots(nrows: int = 1, ncols: int = 1, **kwargs):
    """plt.subplots with the project style applied."""
    apply_style()
    kwargs.setdefault("squeeze", False)
    return plt.subplots(nrows, ncols, **kwargs)


# --- output -----------------------------------------------------------------------------------------------------
def _check_formats(fig, formats) -> tuple[str, ...]:
    supported = fig.canvas.get_supported_filetypes()
    formats = (formats,) if isinstance(formats, str) else formats
    try:
        formats = tuple(formats)
    except TypeError:
        formats = (formats,)
    expected = f"expected one of {', '.join(sorted(supported))}"
    if not formats:
        raise DataError(f"no figure format given; {expected}")
    for fmt in formats:
        if not isinstance(fmt, str) or fmt.lower() not in supported:
            raise DataError(f"unsupported figure format {fmt!r}; {expected}")
    return formats


def _why(err: OSError, target: Path) -> str:
    """The reason an OSError gives, naming the file that stands where a folder is needed."""
    if isinstance(err, (FileExistsError, NotADirectoryError)):
        for parent in target.parents:
            if parent.exists():
                return f"{parent} is not a folder" if not parent.is_dir() else (err.strerror or str(err))
    return err.strerror or str(err)


def save_figure(fig, path_stem: str | os.PathLike, formats: Sequence[str] = ("png", "pdf"),
                close: bool = True) -> list[Path]:
    """Save ``fig`` as ``<stem>.png`` and ``<stem>.pdf`` (atomically: temp files, renamed once all are written).

    The formats are checked first; when a file cannot be written none of this call's files is left behind
    (DataError "cannot write figure <path>: <reason>" for an unwritable place)."""
    if not isinstance(fig, Figure):
        hint = " (pass ax.figure)" if isinstance(fig, Axes) else ""
        raise DataError(f"save_figure needs a matplotlib Figure; got {describe(fig)}{hint}")
    formats = _check_formats(fig, formats)
    stem = Path(path_stem)
    if stem.suffix in (".png", ".pdf"):
        stem = stem.with_suffix("")
    targets = [stem.with_name(f"{stem.name}.{fmt}") for fmt in formats]
    target = targets[0]
    with output_set():                    # all formats or none; inside a caller's set, with the whole set
        temps: list[str] = []
        try:
            stem.parent.mkdir(parents=True, exist_ok=True)
            for fmt, target in zip(formats, targets):
                if target.is_dir():
                    raise IsADirectoryError(errno.EISDIR, "a folder of that name is in the way")
                fd, tmp = temp_file(target, f".{fmt}")
                os.close(fd)
                temps.append(tmp)
                # no creation date in the PDF: the same figure gives the same bytes (diffable, cacheable)
                fig.savefig(tmp, format=fmt, metadata={"CreationDate": None} if fmt == "pdf" else None)
                umask_mode(tmp)
        except BaseException as err:
            remove_files(temps)
            if isinstance(err, OSError):
                raise DataError(f"cannot write figure {target}: {_why(err, target)}") from None
            raise
        for tmp, target in zip(temps, targets):
            place(tmp, target)
    if close:
        plt.close(fig)
    return targets

