"""Demo step: the comparison report of the CE / LS / MaxSup models (``repanalysis compare`` on the demo's Dumps).

The last step: every analysis again through :func:`repanalysis.compare.compare`, now with paired bootstrap
differences against CE and one self-contained ``report.html`` under ``ctx.out / 'report'``. Grad-CAM is scored
against the box around each test digit's ink (the first ``N_DIGITS`` test digits, boxes written to a
``path,x0,y0,x1,y1`` list that ``--boxes`` reads).
"""
from __future__ import annotations

ORDER = 90
TITLE = "Report: every analysis side by side, paired differences against CE, report.html (repanalysis compare)"
N_DIGITS = 512


def digit_box_file(data, folder, n: int = N_DIGITS):
    """Write the ink boxes of the first ``n`` digits of an .npz data set as a 'path,x0,y0,x1,y1' list; its path."""
    import numpy as np

    import repanalysis as ra
    from repanalysis.data.boxes import foreground_boxes
    from repanalysis.outputs import write_text_atomic

    target = folder / f"{data.stem}_ink_boxes_{n}.csv"
    if not target.exists():
        ds = ra.open_dataset(data)
        with np.load(data) as npz:
            images = npz["images"][:n]
        boxes = foreground_boxes(images, ds.samples[:len(images)])
        lines = ["path,x0,y0,x1,y1"] + [f"{key},{x0:g},{y0:g},{x1:g},{y1:g}"
                                        for key, items in boxes.items() for _, x0, y0, x1, y1 in items]
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(target, "\n".join(lines) + "\n", in_set=False)
    return target


def run(ctx) -> None:
    """Write ``ctx.out / 'report'`` (report.html, tables, figures, JSON) and log its path."""
    from repanalysis.compare import compare

    names = ctx.model_names
    boxes = digit_box_file(ctx.data["test"], ctx.out / "data")
    result = compare(dumps=[ctx.dumps[n]["test"] for n in names], names=names,
                     train_dumps=[ctx.dumps[n]["train"] for n in names],
                     ood_dumps=[ctx.ood_dumps[n] for n in names] if all(n in ctx.ood_dumps for n in names) else None,
                     boxes=boxes, cam_limit=N_DIGITS, baseline=names[0], out=ctx.out / "report", n_boot=1000, seed=0,
                     device=ctx.device, progress=ctx.progress, log=ctx.log, command="repanalysis demo",
                     title="repanalysis demo: CE, LS and MaxSup on real MNIST digits")
    sig = result.paired.significant()
    ctx.log(f"{len(sig)} of {len(result.paired.rows)} paired differences against {result.baseline} exclude 0")
    ctx.log(f"report: {result.report.resolve()}")
