"""The self-contained HTML report: escaping, numbers, marks, skipped sections, embedded figures, provenance,
atomic writing; and the page as a real headless Chromium shows it (tests/_browser.py)."""
from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from repanalysis.errors import DataError
from repanalysis.outputs import output_set
from repanalysis.report import Figure, Section, Table, render_report, write_report
from repanalysis.report.html import format_number, slug

EVIL = "<script>alert('x')</script>"
SHA = "3f" * 32
PROVENANCE = {
    "tool": "repanalysis", "version": "0.1.0", "written": "2026-12-06T19:00:00+00:00",
    "command": "repanalysis compare runs/ce/test runs/ls/test --out report",
    "inputs": [
        {"name": "CE", "dump": "/runs/ce/test",
         "checkpoint": {"path": "/ckpt/ce_seed0.pth", "sha256": SHA, "ema": False},
         "arch": "resnet18", "data": {"root": "/data/cifar100", "layout": "cifar", "split": "test"}, "split": "test",
         "transform": {"resolution": 32, "crop_ratio": 1.0, "mean": [0.507, 0.4865, 0.4409]},
         "created": "2026-12-01T10:00:00+00:00"},
        {"name": "LS", "dump": "/runs/ls/test", "checkpoint": {"path": "/ckpt/ls_seed0.pth", "sha256": "ab" * 32,
                                                              "ema": True},
         "arch": "resnet18", "data": {"root": "/data/cifar100", "layout": "cifar"}, "split": "test",
         "transform": {"resolution": 32}, "created": "2026-12-01T11:00:00+00:00"},
    ],
}
MODELS = ["CE", "LS", "MaxSup"]


def _png(path: Path, width_in: float = 4.0, seed: int = 0) -> Path:
    """A real matplotlib figure saved as PNG (100 dpi: its pixel width is width_in * 100)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    fig, ax = plt.subplots(figsize=(width_in, 3.0), dpi=100)
    for name in MODELS:
        ax.plot(np.cumsum(rng.normal(size=50)), label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("value")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
    return path


def _png_width(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[16:20], "big")


def _sections(tmp_path: Path) -> list[Section]:
    rows = [{"model": "CE", "accuracy": 0.91234567, "ece": 0.0412, "best": False},
            {"model": "LS", "accuracy": 0.9201, "ece": float("nan"), "best": True},
            {"model": "MaxSup", "accuracy": 0.9187, "ece": None, "best": False}]
    geometry = [{"model": m, "d_within": 1.5 + i, "separation": 12345.678 * (i + 1), "n": 1000 + i}
                for i, m in enumerate(MODELS)]
    return [
        Section("Accuracy and calibration", [
            "Each model on the same 10,000 test images.",
            Table("Accuracy (higher is better) and ECE (lower is better) per model; the star marks the most "
                  "accurate.", rows=rows, headers={"accuracy": "Accuracy", "ece": "ECE"}, mark="best",
                  mark_note="the most accurate model", title="Accuracy"),
            Figure("Reliability: a curve under the diagonal is over-confident.", _png(tmp_path / "a.png", 4.0, 0),
                   title="Reliability"),
        ]),
        Section("Feature geometry", [
            Table("Within-class spread and class separation of the penultimate features, one row per model.",
                  rows=geometry, digits=3),
            Figure("Feature norms per model.", _png(tmp_path / "b.png", 6.0, 1)),
        ]),
        Section("Grad-CAM", [], skipped="no localisation boxes for this data set"),
    ]


class _Tags(HTMLParser):
    """Checks that every non-void element is closed in order; collects ids and hrefs."""
    VOID = {"meta", "link", "img", "br", "hr", "input", "source", "wbr", "col", "area", "base", "embed"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.ids, self.hrefs, self.doctype = [], [], [], [], None

    def handle_decl(self, decl):
        self.doctype = decl

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.append(attrs["id"])
        if tag == "a" and "href" in attrs:
            self.hrefs.append(attrs["href"])
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def _parse(page: str) -> _Tags:
    p = _Tags()
    p.feed(page)
    p.close()
    return p


def _section(page: str, anchor: str) -> str:
    start = page.index(f'<section id="{anchor}"')
    return page[start:page.index("</section>", start)]


# --- the renderer ---------------------------------------------------------------------------------------------------
def test_page_is_wellformed_html5_with_contents(tmp_path):
    page = render_report("CE against LS", _sections(tmp_path), provenance=PROVENANCE, subtitle="CIFAR-100 test")
    assert page.startswith("<!doctype html>\n<html lang=\"en\">")
    assert '<meta charset="utf-8">' in page
    tags = _parse(page)
    assert tags.errors == [] and tags.stack == []
    assert len(tags.ids) == len(set(tags.ids))
    # the table of contents links every section, in order, and the provenance
    toc = [h[1:] for h in tags.hrefs]
    assert toc == ["accuracy-and-calibration", "feature-geometry", "grad-cam", "provenance"]
    assert all(anchor in tags.ids for anchor in toc)
    assert [m.start() for m in map(lambda a: re.search(f'<section id="{a}"', page), toc)] == \
        sorted(re.search(f'<section id="{a}"', page).start() for a in toc)
    assert "<h1>CE against LS</h1>" in page and "CIFAR-100 test" in page
    assert page.count("<caption>") == 3 and page.count("<figcaption>") == 2   # 2 tables + provenance; 2 figures


def test_self_contained_no_url_no_script(tmp_path):
    page = render_report("Report", _sections(tmp_path), provenance=PROVENANCE)
    assert "http" not in page.lower()
    assert "<script" not in page.lower()
    assert "@import" not in page and "url(" not in page
    srcs = re.findall(r'<img src="([^"]*)"', page)
    assert len(srcs) == 2 and all(s.startswith("data:image/png;base64,") for s in srcs)


def test_text_is_escaped_everywhere(tmp_path):
    sections = [Section(EVIL, [EVIL, Table(EVIL, rows=[{EVIL: EVIL, "x": 1.0}], headers={"x": EVIL}, title=EVIL,
                                           mark=None),
                               Figure(EVIL, _png(tmp_path / "a.png"), alt=EVIL, title=EVIL)],
                        anchor=EVIL),
                Section("Skipped", [], skipped=EVIL)]
    prov = dict(PROVENANCE, command=EVIL, inputs=[dict(PROVENANCE["inputs"][0], name=EVIL, arch=EVIL)])
    page = render_report(EVIL, sections, provenance=prov, subtitle=EVIL)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert _parse(page).errors == []


def test_numbers_are_formatted_and_right_aligned(tmp_path):
    assert format_number(0.91234567) == "0.9123"
    assert format_number(0.5) == "0.5000"
    assert format_number(0.012345) == "0.01235"     # 4 significant digits
    assert format_number(9.99996) == "10.00"         # rounding that carries to the next power of ten
    assert format_number(12345.678) == "12346"
    assert format_number(1.5, digits=2) == "1.5"
    assert format_number(1.2346e-6) == "1.235e-06" and format_number(-2e-7, digits=2) == "-2.0e-07"
    assert format_number(-0.0) == "0" and format_number(0) == "0"
    assert format_number(float("nan")) == "\u2013" and format_number(None) == "\u2013"
    assert format_number(float("inf")) == "\u221e"
    assert format_number(np.float32(0.25)) == "0.2500" and format_number(np.int64(7)) == "7"
    assert format_number(1000) == "1000"
    page = render_report("R", _sections(tmp_path), provenance=PROVENANCE)
    acc = _section(page, "accuracy-and-calibration")
    assert '<td class="num">0.9123</td>' in acc
    assert acc.count('<td class="num">\u2013</td>') == 2            # NaN and None ECE
    assert '<th scope="col" class="num">Accuracy</th>' in acc      # numeric header right-aligned too
    assert '<th scope="col">model</th>' in acc                     # text column stays left
    geo = _section(page, "feature-geometry")
    assert '<td class="num">1.50</td>' in geo and '<td class="num">12346</td>' in geo   # digits=3
    assert '<td class="num">1000</td>' in geo                       # an int stays whole


def test_marked_rows_get_the_class_star_and_legend(tmp_path):
    acc = _section(render_report("R", _sections(tmp_path), provenance=PROVENANCE), "accuracy-and-calibration")
    rows = re.findall(r"<tr( class=\"marked\")?><th scope=\"row\">(.*?)</th>", acc)
    assert [(bool(marked), "LS" in first) for marked, first in rows] == [(False, False), (True, True), (False, False)]
    assert "\u2605" in rows[1][1]
    assert "the most accurate model" in acc and 'class="legend"' in acc
    assert ">best<" not in acc                                   # the mark column is not shown by default
    plain = Table("No mark set.", rows=[{"model": "CE", "best": True}])
    assert 'class="marked"' not in render_report("R", [Section("S", [plain])], provenance={})


def test_skipped_section_shows_only_its_reason(tmp_path):
    sections = [Section("Grad-CAM", ["never shown"], skipped="no localisation boxes")]
    page = render_report("R", sections, provenance=PROVENANCE)
    cam = _section(page, "grad-cam")
    assert "Skipped: no localisation boxes" in cam and "never shown" not in page
    assert "(skipped)" in page[page.index("<nav"):page.index("</nav>")]


def test_figures_embed_the_png_bytes(tmp_path):
    sections = _sections(tmp_path)
    page = render_report("R", sections, provenance=PROVENANCE)
    srcs = re.findall(r'<img src="data:image/png;base64,([^"]*)" width="(\d+)" height="(\d+)" alt="([^"]*)"', page)
    files = [tmp_path / "a.png", tmp_path / "b.png"]
    assert [base64.b64decode(s) for s, *_ in srcs] == [f.read_bytes() for f in files]
    assert [int(w) for _, w, _, _ in srcs] == [_png_width(f) for f in files]
    assert srcs[0][3] == "Reliability"                              # alt: the title when no alt is given


def test_provenance_rows_match_inputs(tmp_path):
    page = render_report("R", _sections(tmp_path), provenance=PROVENANCE)
    prov = _section(page, "provenance")
    body = prov[prov.index("<tbody>"):prov.index("</tbody>")]
    assert body.count("<tr") == len(PROVENANCE["inputs"])
    for item in PROVENANCE["inputs"]:
        assert f'<span class="hash" title="SHA-256">{item["checkpoint"]["sha256"]}</span>' in body  # full, monospace
        assert Path(item["checkpoint"]["path"]).name in body
        assert f'title="{item["checkpoint"]["path"]}"' in body                    # full path on hover
    assert "ls_seed0.pth (EMA)" in body and "/data/cifar100 (cifar)" in body
    assert "resolution=32, crop_ratio=1, mean=(0.507,0.4865,0.4409)" in body        # transform on one line
    for value in ("repanalysis", "0.1.0", "2026-12-06T19:00:00+00:00", PROVENANCE["command"]):
        assert value in prov
    # missing keys, extra keys and no provenance at all are fine
    sparse = render_report("R", [], provenance={"tool": "repanalysis", "seed": 3, "inputs": [{"name": "CE"}]})
    assert "Seed" in sparse and ">CE<" in sparse and _parse(sparse).errors == []
    assert "No provenance was recorded" in render_report("R", [], provenance={})


def test_anchors_are_unique_and_default_to_slugs():
    assert slug("Feature geometry (train)") == "feature-geometry-train" and slug("***") == "section"
    page = render_report("R", [Section("Logits", ["a"]), Section("Logits", ["b"]), Section("X", ["c"], anchor="my id"),
                               Section("Provenance", ["d"])], provenance={})
    tags = _parse(page)
    assert len(tags.ids) == len(set(tags.ids))
    assert [h[1:] for h in tags.hrefs] == ["logits", "logits-2", "my-id", "provenance-2", "provenance"]


def test_bad_input_says_what_was_expected(tmp_path):
    not_png = tmp_path / "fig.png"
    not_png.write_bytes(b"GIF89a....")
    cases = [
        ([Section("S", [Figure("A caption.", not_png)])], "not a PNG"),
        ([Section("S", [Figure("A caption.", tmp_path / "missing.png")])], "cannot read figure"),
        ([Section("S", [42])], "Table, a Figure or a str"),
        ([Section("S", [Table("", rows=[])])], "caption"),
        ([Section("S", [Table("Rows as dict.", rows={"a": 1})])], "list of dicts"),
        ([Section("S", "a paragraph")], "items must be a list"),
        (["not a section"], "list of Section"),
    ]
    for sections, message in cases:
        with pytest.raises(DataError, match=message):
            render_report("R", sections, provenance={})


def test_palette_is_the_plot_palette():
    from repanalysis.plot.style import NEUTRAL, OKABE_ITO
    from repanalysis.report import html

    assert {html.BLUE, html.ORANGE, html.SKY} <= set(OKABE_ITO) and html.NEUTRAL == NEUTRAL


def test_write_report_is_atomic_and_joins_an_output_set(tmp_path):
    sections = _sections(tmp_path)
    out = tmp_path / "out" / "report.html"
    with output_set():
        written = write_report(out, "R", sections, provenance=PROVENANCE)
        assert written == out and not out.exists()           # held back until the set succeeds
    assert out.read_text(encoding="utf-8") == render_report("R", sections, provenance=PROVENANCE)
    before = out.read_bytes()
    with pytest.raises(RuntimeError):
        with output_set():
            write_report(out, "Other", sections, provenance=PROVENANCE)
            raise RuntimeError("a later figure failed")
    assert out.read_bytes() == before                         # the previous report stays
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.html"]   # no temporary file left


# --- in a real browser -----------------------------------------------------------------------------------------------
def test_report_in_headless_chromium(tmp_path):
    from _browser import inspect_page

    sections = _sections(tmp_path)[:2]
    path = write_report(tmp_path / "report.html", "CE, LS and MaxSup on CIFAR-100", sections,
                        provenance=PROVENANCE, subtitle="test split, 10,000 images")
    page = inspect_page(path, screenshot=tmp_path / "report.png")

    widths = [_png_width(tmp_path / "a.png"), _png_width(tmp_path / "b.png")]
    assert [img["naturalWidth"] for img in page["images"]] == widths
    assert all(img["naturalWidth"] > 0 and img["naturalHeight"] > 0 and img["complete"] for img in page["images"])
    assert all(img["src_prefix"].startswith("data:image/png;base64,") for img in page["images"])
    report_tables = page["tables"][:2]
    assert [t["rows"] for t in report_tables] == [3, 3]
    assert all(t["caption"] for t in page["tables"])
    assert [name.lstrip("\u2605 ") for name in report_tables[0]["first_column"]] == MODELS
    assert page["tables"][2]["first_column"] == ["CE", "LS"]            # provenance: one row per input
    assert page["console_errors"] == []
    for name in MODELS:
        assert re.search(rf"\b{name}\b", page["text"])
    assert "Provenance" in page["text"] and SHA in page["text"]
    assert page["title"] == "CE, LS and MaxSup on CIFAR-100"
    shot = page["screenshot"]
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(shot.read_bytes()[20:24], "big") > 1000      # full page, not just the first screen


def test_browser_missing_skips_or_fails_when_required(monkeypatch, tmp_path):
    import _browser

    monkeypatch.setattr(_browser.shutil, "which", lambda name: None)
    monkeypatch.delenv(_browser.REQUIRE, raising=False)
    with pytest.raises(pytest.skip.Exception, match="no chromium or chromedriver on PATH"):
        _browser.inspect_page(tmp_path / "x.html")
    monkeypatch.setenv(_browser.REQUIRE, "1")
    with pytest.raises(pytest.fail.Exception, match="REPANALYSIS_REQUIRE_BROWSER=1 requires"):
        _browser.inspect_page(tmp_path / "x.html")
