"""A self-contained HTML report: sections of tables, figures and paragraphs, then the provenance.

One file with everything inside it: the CSS inline, every figure embedded as a base64 ``data:`` URI, no
script, font or URL, so the page opens offline, can be mailed or archived, and looks the same everywhere.
Every piece of text is HTML-escaped; numbers are formatted to ``digits`` significant digits and
right-aligned.

Example::

    >>> sections = [Section("Calibration", [
    ...     Table("ECE per model, lower is better; the star marks the best.",
    ...           rows=[{"model": "CE", "ece": 0.041, "best": False}, {"model": "LS", "ece": 0.012, "best": True}],
    ...           mark="best", mark_note="lowest ECE"),
    ...     Figure("Reliability diagrams: a bar under the diagonal is over-confident.", Path("reliability.png")),
    ... ])]
    >>> write_report("report.html", "CE against LS", sections, provenance={"tool": "repanalysis"})
"""
from __future__ import annotations

import base64
import html
import math
import numbers
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from repanalysis.errors import DataError
from repanalysis.outputs import current_file, write_text_atomic
from repanalysis.text import display_text

# The colour-blind-safe Okabe & Ito palette of repanalysis/plot/style.py (report may not import plot; a test
# checks that the two agree): blue for structure and links, orange for the mark, grey for notes.
BLUE, ORANGE, SKY = "#0072B2", "#E69F00", "#56B4E9"
NEUTRAL = "#7F7F7F"
DASH = "\u2013"          # what a missing or NaN number shows
STAR = "\u2605"          # the mark of a marked row
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NUM_CLASS, MARKED_CLASS, CODE_CLASS = ' class="num"', ' class="marked"', ' class="code"'
SKIPPED_MARK = ' <span class="skipped-mark">(skipped)</span>'


@dataclass
class Table:
    """A table with its caption.

    caption: one sentence, what the table shows and how to read it.
    rows: one dict per row (column key -> str, int, float, bool or None; numpy scalars are fine).
    headers: column key -> header shown (default: the key).
    columns: the columns shown, in order (default: the first row's keys, then new keys of later rows, without
        the ``mark`` column, which the star stands for).
    digits: significant digits of floats; NaN and None show as an en dash.
    mark: key of a bool column; rows where it is True are bold with a star in the first cell (class
        ``marked``), and a legend under the table says what the star means (``mark_note``).
    title: a heading over the table.
    """
    caption: str
    rows: list[dict]
    headers: dict[str, str] | None = None
    columns: list[str] | None = None
    digits: int = 4
    mark: str | None = None
    mark_note: str | None = None
    title: str | None = None


@dataclass
class Figure:
    """A PNG figure with its caption, embedded in the page (``alt`` defaults to the title or caption)."""
    caption: str
    path: Path
    alt: str | None = None
    title: str | None = None


@dataclass
class Section:
    """A titled part of the report. ``items``: Table, Figure or str (a paragraph). ``skipped``: the reason the
    section was not made; it then shows only "Skipped: <reason>". ``anchor``: its id in the table of contents
    (default: a slug of the title)."""
    title: str
    items: list = field(default_factory=list)
    skipped: str | None = None
    anchor: str | None = None


# --- text and numbers ---------------------------------------------------------------------------------------
def _esc(value) -> str:
    """Text for the page: lone surrogates made printable, then HTML-escaped (quotes too, for attributes)."""
    return html.escape(display_text(value), quote=True)


def _plain(value):
    """A numpy scalar or 0-d array/tensor as its Python value; anything else unchanged."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        return value.item()
    return value


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def format_number(value, digits: int = 4) -> str:
    """A number for a table cell: integers whole, floats to ``digits`` significant digits (trailing zeros kept,
    so a column lines up: 0.5000, 0.01235), large floats whole (12346), tiny ones in scientific notation
    (1.235e-05); NaN and None as an en dash, infinities as +-inf, never a negative zero."""
    value = _plain(value)
    if value is None:
        return DASH
    if isinstance(value, numbers.Integral):
        return str(int(value))
    value = float(value)
    if math.isnan(value):
        return DASH
    if math.isinf(value):
        return "\u221e" if value > 0 else "\u2212\u221e"
    if value == 0:
        return "0"
    digits = max(int(digits), 1)
    exponent = math.floor(math.log10(abs(float(f"{value:.{digits - 1}e}"))))    # after rounding: 9.99995 -> 1
    if exponent < -4:
        return f"{value:.{digits - 1}e}"
    text = f"{value:.{max(digits - 1 - exponent, 0)}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def _cell_text(value, digits: int) -> str:
    value = _plain(value)
    if value is None or _is_number(value):
        return format_number(value, digits)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return display_text(value)


def slug(text: str) -> str:
    """An id made of the title's letters and digits: "Feature geometry (train)" -> "feature-geometry-train"."""
    out = re.sub(r"[^0-9a-z]+", "-", display_text(text).lower()).strip("-")
    return out or "section"


# --- checks at the boundary ----------------------------------------------------------------------------------
def _check_text(value, what: str, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{what} must be non-empty text; got {value!r}")


def _check_table(table: Table, where: str) -> None:
    _check_text(table.caption, f"{where}: the table's caption")
    if not isinstance(table.rows, (list, tuple)) or not all(isinstance(r, Mapping) for r in table.rows):
        raise DataError(f"{where}: a table's rows must be a list of dicts (one per row); got "
                        f"{type(table.rows).__name__}")
    if isinstance(table.digits, bool) or not isinstance(table.digits, numbers.Integral) or table.digits < 1:
        raise DataError(f"{where}: digits must be a positive whole number; got {table.digits!r}")
    if table.columns is not None and isinstance(table.columns, str):
        raise DataError(f"{where}: columns must be a list of column keys; got the text {table.columns!r}")


def _png_size(data: bytes, path: Path) -> tuple[int, int]:
    if data[:8] != PNG_SIGNATURE or len(data) < 24 or data[12:16] != b"IHDR":
        raise DataError(f"figure {path} is not a PNG file; the report embeds PNG figures (save_figure writes one)")
    return struct.unpack(">II", data[16:24])


# --- pieces of the page ----------------------------------------------------------------------------------------
def _columns(table: Table) -> list[str]:
    if table.columns is not None:
        return [str(c) for c in table.columns]
    return [k for k in dict.fromkeys(str(k) for row in table.rows for k in row) if k != table.mark]


def _table_html(table: Table, *, classes: Mapping[str, str] | None = None,
                tips: Mapping[str, Sequence[str]] | None = None,
                extra: Mapping[str, Sequence[str]] | None = None) -> str:
    """``classes``: column -> a CSS class of its cells ("code": monospace); ``tips``: column -> per-row hover
    text (the provenance's paths); ``extra``: column -> per-row HTML (already escaped) put under the cell's
    text (the provenance's hashes)."""
    columns = _columns(table)
    headers = {str(k): v for k, v in (table.headers or {}).items()}
    numeric = {c for c in columns
               if any(_plain(r.get(c)) is not None for r in table.rows)
               and all(_plain(r.get(c)) is None or _is_number(_plain(r.get(c))) for r in table.rows)}
    out = []
    if table.title:
        out.append(f"<h3>{_esc(table.title)}</h3>")
    out.append('<div class="table-wrap"><table>')
    out.append(f"<caption>{_esc(table.caption)}</caption>")
    head = "".join(f'<th scope="col"{NUM_CLASS if c in numeric else ""}>{_esc(headers.get(c, c))}</th>'
                   for c in columns)
    out.append(f"<thead><tr>{head}</tr></thead><tbody>")
    marked_any = False
    for i, row in enumerate(table.rows):
        marked = table.mark is not None and _plain(row.get(table.mark)) is True
        marked_any |= marked
        cells = []
        for j, c in enumerate(columns):
            value = _plain(row.get(c))
            names = ["num"] if _is_number(value) or (value is None and c in numeric) else []
            names += [(classes or {})[c]] if c in (classes or {}) else []
            text = _esc(_cell_text(value, table.digits))
            if j == 0 and marked:
                text = f'<span class="star" aria-label="marked">{STAR}</span> {text}'
            tip = (tips or {}).get(c)
            more = (extra or {}).get(c)
            if more is not None and more[i]:
                text += more[i]
            attrs = (f' class="{" ".join(names)}"' if names else "") + \
                    (f' title="{_esc(tip[i])}"' if tip is not None and tip[i] else "")
            tag = "th" if j == 0 else "td"           # the first cell names the row (the model)
            scope = ' scope="row"' if j == 0 else ""
            cells.append(f"<{tag}{scope}{attrs}>{text}</{tag}>")
        out.append(f'<tr{MARKED_CLASS if marked else ""}>{"".join(cells)}</tr>')
    out.append("</tbody></table></div>")
    if not table.rows:
        out.append('<p class="note">No rows.</p>')
    if table.mark is not None and marked_any:
        note = table.mark_note or f"rows where {headers.get(table.mark, table.mark)} is true"
        out.append(f'<p class="legend"><span class="star">{STAR}</span> {_esc(note)}</p>')
    return "".join(out)


def _figure_html(figure: Figure, where: str) -> str:
    _check_text(figure.caption, f"{where}: the figure's caption")
    path = Path(figure.path)
    try:
        data = current_file(path).read_bytes()     # a figure drawn in the same output_set: its queued file
    except OSError as err:
        raise DataError(f"{where}: cannot read figure {path}: {err.strerror or err}") from None
    width, height = _png_size(data, path)
    alt = figure.alt or figure.title or figure.caption
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    title = f"<h3>{_esc(figure.title)}</h3>" if figure.title else ""
    return (f"<figure>{title}<img src=\"{uri}\" width=\"{width}\" height=\"{height}\" alt=\"{_esc(alt)}\">"
            f"<figcaption>{_esc(figure.caption)}</figcaption></figure>")


def _item_html(item, where: str) -> str:
    if isinstance(item, Table):
        _check_table(item, where)
        return _table_html(item)
    if isinstance(item, Figure):
        return _figure_html(item, where)
    if isinstance(item, str):
        return f"<p>{_esc(item)}</p>"
    raise DataError(f"{where}: an item must be a Table, a Figure or a str (a paragraph); got "
                    f"{type(item).__name__}")


def _anchors(sections: Sequence[Section]) -> list[str]:
    """One unique id per section (and none equal to the provenance's): a repeated one gets -2, -3, ..."""
    taken, out = {"provenance", "contents"}, []
    for s in sections:
        base = slug(s.anchor if s.anchor is not None else s.title)
        anchor, n = base, 2
        while anchor in taken:
            anchor, n = f"{base}-{n}", n + 1
        taken.add(anchor)
        out.append(anchor)
    return out


def _section_html(section: Section, anchor: str) -> str:
    where = f"section {section.title!r}"
    out = [f'<section id="{_esc(anchor)}"><h2>{_esc(section.title)}</h2>']
    if section.skipped is not None:
        out.append(f'<p class="skipped">Skipped: {_esc(section.skipped)}</p>')
    else:
        items = section.items
        if isinstance(items, (Table, Figure, str)) or not isinstance(items, (list, tuple)):
            raise DataError(f"{where}: items must be a list of Table, Figure or str; got {type(items).__name__}")
        out += [_item_html(item, where) for item in items]
    out.append("</section>")
    return "\n".join(out)


# --- provenance --------------------------------------------------------------------------------------------------
def _compact(value, nested: bool = False) -> str:
    """A value on one line: dicts as ``key=value`` pairs (empty values left out; a nested dict in braces),
    lists as comma-separated items in parentheses, floats shortly."""
    value = _plain(value)
    if value is None:
        return DASH
    if isinstance(value, Mapping):
        pairs = ", ".join(f"{k}={_compact(v, True)}" for k, v in value.items()
                          if not (v is None or (isinstance(v, (str, list, tuple, Mapping)) and not v)))
        return "{" + pairs + "}" if nested else pairs
    if isinstance(value, (list, tuple)):
        return "(" + ",".join(_compact(v, True) for v in value) + ")"
    if isinstance(value, float):
        return f"{value:g}"
    return display_text(value)


def _data_text(data) -> str:
    """A dataset description as "root (layout)", or whatever it is on one line."""
    if not isinstance(data, Mapping):
        return _compact(data)
    root, layout = data.get("root") or data.get("spec"), data.get("layout")
    if root is None:
        return _compact(data)
    return f"{display_text(root)} ({display_text(layout)})" if layout else display_text(root)


def _provenance_rows(inputs) -> tuple[list[dict], list[str], list[str]]:
    """Table rows, the checkpoints' full paths (hover text) and their SHA-256 lines (HTML under the name)."""
    rows, paths, hashes = [], [], []
    for i, item in enumerate(inputs):
        item = item if isinstance(item, Mapping) else {"name": item}
        ckpt = item.get("checkpoint")
        ckpt = ckpt if isinstance(ckpt, Mapping) else {"path": ckpt}
        path = ckpt.get("path")
        name = Path(str(path)).name if path else None
        if name and ckpt.get("ema"):
            name += " (EMA)"
        data = item.get("data", item.get("dataset"))
        split = item.get("split") or (data.get("split") if isinstance(data, Mapping) else None)
        rows.append({"name": item.get("name", f"input {i + 1}"), "checkpoint": name,
                     "arch": item.get("arch"), "data": _data_text(data) if data is not None else None,
                     "split": split, "transform": _compact(item["transform"]) if item.get("transform") else None,
                     "created": item.get("created")})
        paths.append(str(path) if path else "")
        sha = ckpt.get("sha256")
        hashes.append(f'<br><span class="hash" title="SHA-256">{_esc(sha)}</span>' if sha else "")
    return rows, paths, hashes


_LINES = (("tool", "Tool"), ("version", "Version"), ("written", "Written"), ("command", "Command"))


def _provenance_html(provenance) -> str:
    out = ['<section id="provenance" class="provenance"><h2>Provenance</h2>']
    if not isinstance(provenance, Mapping) or not provenance:
        out.append('<p class="note">No provenance was recorded.</p></section>')
        return "\n".join(out)
    lines = [(label, provenance[key]) for key, label in _LINES if provenance.get(key) is not None]
    lines += [(str(k).replace("_", " ").capitalize(), v) for k, v in provenance.items()
              if k not in dict(_LINES) and k != "inputs" and v is not None]
    if lines:
        out.append("<dl>" + "".join(
            f"<dt>{_esc(label)}</dt><dd{CODE_CLASS if label == 'Command' else ''}>{_esc(_compact(value))}</dd>"
            for label, value in lines) + "</dl>")
    inputs = provenance.get("inputs")
    if inputs:
        inputs = [inputs] if isinstance(inputs, Mapping) else list(inputs)
        rows, paths, hashes = _provenance_rows(inputs)
        table = Table("The inputs of this report, one row per model: the checkpoint file with its SHA-256 under it "
                      "(hover for the full path), the "
                      "architecture, the data, split and evaluation transform, and when the features were "
                      "extracted.", rows=rows,
                      headers={"name": "Model", "checkpoint": "Checkpoint, SHA-256", "arch": "Arch",
                               "data": "Data (layout)", "split": "Split", "transform": "Transform",
                               "created": "Created"})
        out.append(_table_html(table, classes={"transform": "code", "created": "nowrap"},
                               tips={"checkpoint": paths}, extra={"checkpoint": hashes}))
    out.append("</section>")
    return "\n".join(out)


# --- the page ------------------------------------------------------------------------------------------------------
_CSS = f"""
:root {{ color-scheme: light; }}
* {{ box-sizing: border-box; }}
body {{ margin: 0; background: #fff; color: #1d1d1f;
  font: 16px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans", "Liberation Sans",
    Arial, sans-serif; }}
main {{ max-width: 68rem; margin: 0 auto; padding: 2rem 1.5rem 4rem; }}
h1 {{ font-size: 1.9rem; line-height: 1.2; margin: 0 0 .3rem; }}
.subtitle {{ color: #444; font-size: 1.1rem; margin: 0 0 1.5rem; }}
h2 {{ font-size: 1.4rem; margin: 2.5rem 0 .8rem; padding-bottom: .25rem; border-bottom: 3px solid {BLUE}; }}
h3 {{ font-size: 1.1rem; margin: 1.6rem 0 .5rem; }}
p {{ margin: .6rem 0; max-width: 48rem; }}
a {{ color: {BLUE}; }}
nav.toc {{ background: #f4f8fb; border-left: 4px solid {SKY}; padding: .6rem 1.2rem; margin: 1rem 0 2rem; }}
nav.toc h2 {{ border: 0; margin: .2rem 0 .3rem; font-size: 1.05rem; }}
nav.toc ol {{ margin: 0; padding-left: 1.4rem; }}
nav.toc .skipped-mark {{ color: {NEUTRAL}; font-size: .9em; }}
.table-wrap {{ overflow-x: auto; margin: .6rem 0 .3rem; }}
table {{ border-collapse: collapse; font-size: .92rem; font-variant-numeric: tabular-nums;
  min-width: min(100%, 36rem); }}                    /* room for a caption of one or two lines */
caption {{ caption-side: top; text-align: left; color: #333; padding: 0 0 .45rem; max-width: 48rem; }}
th, td {{ padding: .3rem .7rem; text-align: left; vertical-align: top; }}
thead th {{ border-bottom: 2px solid #333; background: #fff; font-weight: 600; }}
tbody th {{ font-weight: normal; }}
tbody tr:nth-child(even) {{ background: #f3f5f7; }}
tbody tr:last-child th, tbody tr:last-child td {{ border-bottom: 1px solid #333; }}
.num {{ text-align: right; white-space: nowrap; }}
.code {{ font-family: ui-monospace, "DejaVu Sans Mono", "Liberation Mono", Menlo, Consolas, monospace;
  font-size: .85em; }}
td.code {{ overflow-wrap: anywhere; min-width: 11rem; }}
.nowrap {{ white-space: nowrap; }}
.hash {{ display: inline-block; width: 33ch; word-break: break-all; font-size: .78em; color: #444;
  font-family: ui-monospace, "DejaVu Sans Mono", "Liberation Mono", Menlo, Consolas, monospace; }}
tr.marked th, tr.marked td {{ font-weight: 700; }}
tr.marked {{ box-shadow: inset 4px 0 0 {ORANGE}; }}
.star {{ color: {ORANGE}; }}
.legend, .note {{ font-size: .88rem; color: #444; margin: .2rem 0 1rem; }}
.skipped {{ color: #444; font-style: italic; border-left: 4px solid {NEUTRAL}; padding: .3rem .8rem;
  background: #f6f6f6; }}
figure {{ margin: 1.2rem 0; }}
figure img {{ display: block; max-width: 100%; height: auto; }}
figcaption {{ font-size: .92rem; color: #333; margin-top: .4rem; max-width: 48rem; }}
dl {{ display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; margin: .5rem 0 1rem; }}
dt {{ font-weight: 600; }}
dd {{ margin: 0; overflow-wrap: anywhere; }}
.provenance table {{ font-size: .82rem; }}
@media print {{ nav.toc {{ display: none; }} section {{ break-inside: avoid-page; }} }}
"""


def render_report(title: str, sections: Sequence[Section], *, provenance: Mapping | None,
                  subtitle: str | None = None) -> str:
    """The whole report as one HTML5 page (str): title, subtitle, a table of contents, the sections in order,
    then the provenance (tool, version, date, command, and one row per input: checkpoint name and SHA-256,
    architecture, data, split, transform, creation time). Self-contained: inline CSS, figures as data URIs,
    no script and no URL. DataError on an item that is not a Table, Figure or str, a missing caption, or a
    figure that is not a readable PNG."""
    _check_text(title, "the report's title")
    _check_text(subtitle, "the report's subtitle", optional=True)
    if isinstance(sections, Section) or not isinstance(sections, Sequence) or isinstance(sections, str):
        raise DataError(f"sections must be a list of Section; got {type(sections).__name__}")
    for i, s in enumerate(sections):
        if not isinstance(s, Section):
            raise DataError(f"sections must be a list of Section; item {i} is a {type(s).__name__}")
        _check_text(s.title, f"section {i + 1}'s title")
    anchors = _anchors(sections)
    body = [_section_html(s, a) for s, a in zip(sections, anchors)]
    toc = "".join(f'<li><a href="#{_esc(a)}">{_esc(s.title)}</a>'
                  f'{SKIPPED_MARK if s.skipped is not None else ""}</li>'
                  for s, a in zip(sections, anchors))
    toc += '<li><a href="#provenance">Provenance</a></li>'
    version = provenance.get("version") if isinstance(provenance, Mapping) else None
    generator = f"repanalysis {version}" if version else "repanalysis"
    return "\n".join([
        "<!doctype html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta name="generator" content="{_esc(generator)}">',
        '<link rel="icon" href="data:,">',          # no favicon request (the page loads nothing)
        f"<title>{_esc(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<main>",
        "<header>",
        f"<h1>{_esc(title)}</h1>",
        f'<p class="subtitle">{_esc(subtitle)}</p>' if subtitle else "",
        "</header>",
        f'<nav class="toc" id="contents" aria-label="Contents"><h2>Contents</h2><ol>{toc}</ol></nav>',
        *body,
        _provenance_html(provenance),
        "</main>",
        "</body>",
        "</html>",
        "",
    ])


def write_report(path: str | os.PathLike, title: str, sections: Sequence[Section], *, provenance: Mapping | None,
                 subtitle: str | None = None) -> Path:
    """Render the report (:func:`render_report`) and write it to ``path`` atomically, with the enclosing
    :func:`repanalysis.outputs.output_set` if any; the folder is made when missing. Returns the path."""
    text = render_report(title, sections, provenance=provenance, subtitle=subtitle)
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, text)
    except OSError as err:
        raise DataError(f"cannot write report {path}: {err.strerror or err}") from None
    return path
