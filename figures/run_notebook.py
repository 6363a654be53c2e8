"""Execute figures/figures.ipynb with nbclient (an ipykernel of this Python) and write its figures.

    .venv/bin/python figures/run_notebook.py                    # the demo's Dumps -> figures/<name>.png and .pdf
    .venv/bin/python figures/run_notebook.py --dumps runs/dumps --checkpoints runs/ckpt --data runs/data --out /tmp/f
    .venv/bin/python figures/run_notebook.py --executed /tmp/figures.executed.ipynb   # also keep the outputs

What `make figures` runs. The notebook reads its inputs from the REPANALYSIS_FIGURES_* environment variables
(relative paths there are relative to figures/); the options here set them, resolved against the current folder.
The committed notebook holds no outputs; ``--executed`` writes the executed copy (figures inline as image/png).
"""
from __future__ import annotations

import argparse
import base64
import os
import sys
import time
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().with_name("figures.ipynb")
OPTIONS = {"dumps": "REPANALYSIS_FIGURES_DUMPS", "checkpoints": "REPANALYSIS_FIGURES_CHECKPOINTS",
           "data": "REPANALYSIS_FIGURES_DATA", "out": "REPANALYSIS_FIGURES_OUT"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def execute_notebook(notebook=NOTEBOOK, env: dict[str, str] | None = None, timeout: int = 600):
    """Run every cell of ``notebook`` in a fresh kernel (working folder: the notebook's) and return the executed
    NotebookNode; ``env`` is added to this process's environment for the kernel. A failing cell raises
    nbclient's CellExecutionError naming the cell and the error."""
    import nbformat
    from nbclient import NotebookClient

    notebook = Path(notebook)
    nb = nbformat.read(notebook, as_version=4)
    kernel_env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}   # the kernel draws inline
    kernel_env.update(env or {})
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            extra_arguments=["--IPKernelApp.log_level=ERROR"],   # not its local-TCP warning
                            resources={"metadata": {"path": str(notebook.parent)}})
    client.execute(env=kernel_env)
    return nb


def cell_images(nb) -> list[list[bytes]]:
    """The image/png outputs of each code cell of an executed notebook, decoded (one list per code cell)."""
    return [[base64.b64decode(out["data"]["image/png"]) for out in cell.get("outputs", [])
             if "image/png" in out.get("data", {})] for cell in nb.cells if cell.cell_type == "code"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for option, var in OPTIONS.items():
        parser.add_argument(f"--{option}", help=f"sets {var} (default: the notebook's, under figures/)")
    parser.add_argument("--executed", type=Path, help="also write the executed notebook (with outputs) here")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell (default 600)")
    args = parser.parse_args(argv)
    env = {var: str(Path(getattr(args, option)).resolve()) for option, var in OPTIONS.items()
           if getattr(args, option) is not None}
    start = time.perf_counter()
    nb = execute_notebook(NOTEBOOK, env, timeout=args.timeout)
    images = [png for cell in cell_images(nb) for png in cell]
    bad = [i for i, png in enumerate(images) if not png.startswith(PNG_MAGIC)]
    if args.executed:
        import nbformat

        nbformat.write(nb, args.executed)
    out = Path(env.get(OPTIONS["out"], NOTEBOOK.parent))
    print(f"executed {NOTEBOOK.name} in {time.perf_counter() - start:.1f}s: {len(images)} figures, "
          f"written as <name>.png and .pdf in {out}")
    if bad or not images:
        print(f"error: {len(bad)} of {len(images)} inline figures are not PNG images", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
