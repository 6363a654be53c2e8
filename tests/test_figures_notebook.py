"""figures/figures.ipynb executes with nbclient on real Dumps and draws every figure, inline and as files.

The test lays out the demo's folders (checkpoints/<stem>.pth, data/*.npz, dumps/<stem>_{train,test}/) in tmp_path
from the session's real CE / LS / MaxSup models, so it never depends on whether `make demo` ran, and runs the
notebook through figures/run_notebook.py (what `make figures` runs) with the folders given as its options.
"""
from __future__ import annotations

import importlib.util
import shutil
import struct
from pathlib import Path

import pytest

FIGURES = Path(__file__).resolve().parents[1] / "figures"
NOTEBOOK = FIGURES / "figures.ipynb"
# one figure cell each, saved as <name>.png / .pdf
FIGURE_NAMES = {"logit_analysis", "logit_comparison", "separation", "projection", "reliability", "gradcam"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _runner():
    spec = importlib.util.spec_from_file_location("figures_run_notebook", FIGURES / "run_notebook.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, after checking the signature."""
    assert data[:8] == PNG_MAGIC, f"not a PNG: starts with {data[:8]!r}"
    assert data[12:16] == b"IHDR", "PNG without an IHDR chunk first"
    return struct.unpack(">II", data[16:24])


def _check_png(data: bytes, what: str) -> None:
    import io

    from PIL import Image

    width, height = _png_size(data)
    assert width >= 300 and height >= 200, f"{what}: a {width}x{height} image is too small for a figure"
    with Image.open(io.BytesIO(data)) as img:
        img.load()                      # decodes every pixel: a truncated file fails here
        assert img.size == (width, height)
        low, high = img.convert("L").getextrema()
        assert low < high, f"{what}: a blank image"


def test_committed_notebook_is_clean_and_reads_its_inputs_from_the_environment():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "commit the notebook without outputs"
    params = code[0]
    assert "parameters" in params.metadata.get("tags", [])
    for var, default in (("REPANALYSIS_FIGURES_DUMPS", "demo/dumps"), ("REPANALYSIS_FIGURES_OUT", ".")):
        assert f'os.environ.get("{var}", "{default}")' in params.source
    saved = {name for c in code for name in FIGURE_NAMES if f'out / "{name}"' in c.source}
    assert saved == FIGURE_NAMES
    # a markdown cell before each figure cell says what it shows
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and "save_figure(" in cell.source and "out /" in cell.source:
            assert nb.cells[i - 1].cell_type == "markdown" and nb.cells[i - 1].source.startswith("## ")


@pytest.mark.slow
def test_notebook_executes_on_real_dumps_and_writes_every_figure(real_checkpoints, real_data, real_dumps, tmp_path,
                                                                 monkeypatch):
    import nbformat

    # the demo's layout, from the session's real models
    layout = tmp_path / "demo"
    for name, ckpt in real_checkpoints.items():
        (layout / "checkpoints").mkdir(parents=True, exist_ok=True)
        shutil.copy2(ckpt, layout / "checkpoints" / ckpt.name)
        for split, dump in real_dumps[name].items():
            shutil.copytree(dump.path, layout / "dumps" / f"{ckpt.stem}_{split}")
    shutil.copytree(Path(real_data["test"]).parent, layout / "data")
    out, executed = tmp_path / "figures", tmp_path / "executed.ipynb"
    monkeypatch.setenv("REPANALYSIS_FIGURES_CAM_IMAGES", "48")
    monkeypatch.chdir(tmp_path)                         # the runner resolves relative options against this folder
    runner = _runner()
    rc = runner.main(["--dumps", "demo/dumps", "--checkpoints", "demo/checkpoints", "--data", "demo/data",
                         "--out", "figures", "--executed", str(executed), "--timeout", "300"])
    assert rc == 0

    nb = nbformat.read(executed, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, "\n".join(f"{e.ename}: {e.evalue}" for e in errors)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    figure_cells = [(c, pngs) for c, pngs in zip(code, runner.cell_images(nb))
                    if "save_figure(" in c.source and "out /" in c.source]
    assert len(figure_cells) == len(FIGURE_NAMES)
    for cell, pngs in figure_cells:
        first_line = cell.source.splitlines()[0]
        assert len(pngs) == 1, f"the cell starting {first_line!r} showed {len(pngs)} images, expected one"
        _check_png(pngs[0], f"inline figure of the cell starting {first_line!r}")
    # the models were found and named by their loss
    load = next(c for c in code if "load_dump" in c.source)
    shown = "".join(o.get("data", {}).get("text/plain", "") for o in load.outputs)
    assert all(f"name={name!r}" in shown for name in real_checkpoints), shown

    assert {p.stem for p in out.glob("*.png")} == FIGURE_NAMES
    for name in FIGURE_NAMES:
        _check_png((out / f"{name}.png").read_bytes(), f"{name}.png")
        assert (out / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"
