"""Figure saving: PNG + PDF written atomically, PDFs without a creation date (same figure, same bytes)."""
from __future__ import annotations

import matplotlib.pyplot as plt

from repanalysis.plot.style import save_figure


def test_save_figure_writes_png_and_reproducible_pdf(tmp_path):
    digests = []
    for _ in range(2):
        fig, ax = plt.subplots()
        ax.plot([0, 1], [1, 0], label="CE")
        ax.legend()
        png, pdf = save_figure(fig, tmp_path / "f")
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pdf.read_bytes()[:5] == b"%PDF-"
        assert b"/CreationDate" not in pdf.read_bytes()
        digests.append((png.read_bytes(), pdf.read_bytes()))
    assert digests[0] == digests[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.pdf", "f.png"]     # no temporary files left
